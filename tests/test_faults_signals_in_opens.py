"""Fault battery, a signal while GDAL blocks in an open (a pipe, a server that never answers):
the command stops with its stop line and leaves nothing. Each in a process of its own, bounded in
time and killed whole if it does not end."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max-steps", "1", "--ngf", "8", "--ndf", "8", "--batch-size", "2", "--workers", "0",
        "--device", "cpu"]


# --- a signal while GDAL blocks in an open ----------------------------------------------------

def _wait_for_reader(path: Path, process: subprocess.Popen, timeout: float = 120) -> int:
    """Once `process` has the pipe open for reading (GDAL is in its open), the write end,
    held open so that GDAL's read blocks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO:
                raise
        time.sleep(0.1)
    raise AssertionError(f"the command never opened {path}: {process.communicate()}")


def _stopped(process: subprocess.Popen, signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError("the signal did not stop the command within 30 s") from None
    return process.returncode, err


def _start(args: list) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "geopix2pix", *map(str, args)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


STOP_LINES = {"export-chips": "Stopped: no chips were exported to",
              "predict": "Stopped: ", "evaluate": ""}


@pytest.mark.parametrize("command, signum", [("predict", signal.SIGINT),
                                             ("predict", signal.SIGTERM),
                                             ("export-chips", signal.SIGINT),
                                             ("evaluate", signal.SIGTERM)])
def test_a_signal_while_gdal_blocks_in_an_open_stops_the_command(inputs, tmp_path, command,
                                                                 signum):
    pipe = tmp_path / "scene.tif.gz"
    os.mkfifo(pipe)
    name = f"/vsigzip/{pipe}"  # a GDAL name: opened, and blocked reading the pipe
    out = tmp_path / "out"
    args = {"export-chips": ["export-chips", name, inputs / "t.tif", "-o", out],
            "predict": ["predict", name, out.with_suffix(".tif"), "-m",
                        inputs / "model.safetensors", "-q"],
            "evaluate": ["evaluate", name, inputs / "s.tif"]}[command]
    process = _start(args)
    writer = _wait_for_reader(pipe, process)
    try:
        code, err = _stopped(process, signum)
    finally:
        os.close(writer)
    assert code == 128 + signum, err
    last = err.strip().splitlines()[-1]
    if command == "evaluate":
        assert last == ("Aborted." if signum == signal.SIGINT else "Terminated.")
    else:
        assert last.startswith(STOP_LINES[command]), err
    assert "Exception ignored" not in err and "Traceback" not in err and "not a raster" not in err
    assert not out.exists() and not out.with_suffix(".tif").exists()


def test_a_signal_while_a_server_does_not_answer_stops_predict(inputs, tmp_path):
    """A /vsicurl/ scene whose server accepts and never answers: GDAL blocks in curl."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    out = tmp_path / "out.tif"
    process = _start(["predict", f"/vsicurl/http://127.0.0.1:{server.getsockname()[1]}/s.tif",
                      out, "-m", inputs / "model.safetensors", "-q"])
    deadline = time.monotonic() + 120
    while not accepted and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    try:
        assert accepted, process.communicate()
        code, err = _stopped(process, signal.SIGTERM)
    finally:
        server.close()
    assert code == 143 and err.strip().splitlines() == [f"Stopped: {out} was not written (no "
                                                        "partial output is left)"], err
    assert not out.exists()
