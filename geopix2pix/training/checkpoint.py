"""RUN_DIR/checkpoint.pt: everything a run needs to continue exactly where it stopped.

Networks, optimizers, grad scaler, schedule, epoch, step (and batches done in the epoch), the
best validation score so far, the options, and every RNG state (Python, NumPy, torch, CUDA). All
of it is stored as tensors, numbers, strings, lists and dicts, so the file loads with
``torch.load(weights_only=True)``: reading a checkpoint never runs code from it, and nothing
of it is loaded into the run before its digest (`models.digest.state_digest`: a file changed
after writing is refused) and its structure and tensor shapes are checked against the run's
networks (`checkpoint_check`). It is written under a temporary name and renamed, so a
crash while saving leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models.digest import state_digest
from geopix2pix.models.schema import SchemaError, shown
from geopix2pix.models.torchfile import load_failure, load_weights_only
from geopix2pix.raster.write import atomic_path

from .checkpoint_check import DivergedState, Expected, check_checkpoint
from .outputs import writing

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1
DIGEST = "digest"  # `state_digest` of the rest, written last


def rng_state() -> dict[str, Any]:
    """The states of all random generators, as weights_only-loadable values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by ``rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the RNG states) to RUN_DIR/checkpoint.pt atomically and durably
    (flushed to the disk before it is renamed into place); a failure to write it (a full disk)
    is a GeoPix2PixError naming it, and the previous one stays intact.

    torch.save writes into a Python file, so an OS error reaches us as such (saving to a path,
    torch's C++ writer says only "iostream error")."""
    path = Path(run_dir) / CHECKPOINT
    content = {"format_version": FORMAT_VERSION, **state, "rng": rng_state()}
    content[DIGEST] = state_digest(content)
    with writing(path), atomic_path(path, overwrite=True, own=True) as temp, \
            temp.open("wb") as handle:
        torch.save(content, handle)
        handle.flush()  # on the disk before its rename: after a power cut, checkpoint.pt is
        os.fsync(handle.fileno())  # the old one or the new one whole, never an empty file
    return path


def load_checkpoint(run_dir: Path, expected: Expected | None = None) -> dict[str, Any]:
    """Read RUN_DIR/checkpoint.pt (weights only, no code); GeoPix2PixError when missing/bad,
    or (with `expected`: the run's networks, optimizers and state) when its structure, tensor
    shapes or values do not fit the run (`check_checkpoint`): nothing is loaded from it then."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise GeoPix2PixError(f"--resume: {path} does not exist; start the run without --resume")
    try:
        state = load_weights_only(path)
    except Exception as exc:  # any unreadable file is the user's to fix
        why = load_failure(path, exc, "a checkpoint holds tensors, numbers and strings only")
        raise GeoPix2PixError(f"--resume: cannot read {path}: {why}; start a new run with "
                              "--overwrite") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise GeoPix2PixError(f"--resume: {path} is not a geopix2pix checkpoint; start a new run "
                              "with --overwrite")
    recorded = state.pop(DIGEST, None)  # checkpoints from before the digest have none
    if recorded is not None and recorded != state_digest(state):
        raise GeoPix2PixError(f"--resume: {path} does not match the digest it records: the file "
                              "is damaged (changed after it was written); restore it, or start "
                              "a new run with --overwrite")
    if expected is not None:
        try:
            check_checkpoint(state, expected)
        except DivergedState as exc:
            raise GeoPix2PixError(f"--resume: {path} cannot be continued: {exc}, so training "
                                  "had diverged when it was saved; start a new run with "
                                  "--overwrite and a lower --lr") from None
        except SchemaError as exc:
            raise GeoPix2PixError(f"--resume: {path} does not fit this run ({exc}); it is damaged "
                                  "or another run's: start a new run with --overwrite") from None
    return state


def _difference(option: str, saved: Any, current: Any) -> str:
    """One option's change, as a resume refusal says it (the chips by what they are, not by
    their dataset.json's digest)."""
    if option == "dataset":
        return ("the chips (not those the run began with: another folder, or re-exported since; "
                "dataset.json differs)")
    return f"{option}: {shown(saved)} -> {shown(current)}"


def check_same_options(saved: dict[str, Any], current: dict[str, Any], path: Path,
                       defaults: dict[str, Any] | None = None) -> None:
    """Refuse to resume a run with options that change what it learns. An option the checkpoint
    lacks (one added since it was written, e.g. categorical) counts as its default in
    `defaults`, which is what that run used."""
    saved = json.loads(json.dumps({**(defaults or {}), **saved}))
    current = json.loads(json.dumps(current))
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differ:
        detail = ", ".join(_difference(k, saved.get(k), current.get(k)) for k in differ[:4])
        raise GeoPix2PixError(f"--resume: {path} was written with different options ({detail}); "
                              "resume with the original options or start a new run")
