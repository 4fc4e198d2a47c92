"""Stopping a run: Ctrl-C (SIGINT) and SIGTERM (``kill``, ``timeout``, a batch scheduler) alike.

While the steps run, ``StopRequest`` turns the first of either signal into a flag that the loop
checks between steps: it finishes the step, writes checkpoint.pt and raises ``TrainingStopped``
(a KeyboardInterrupt) that says where the checkpoint is. A second Ctrl-C interrupts at once.
Outside the steps (setting up), the `geopix2pix` program makes SIGTERM raise KeyboardInterrupt
as Ctrl-C does (``cli.Terminated``). DataLoader workers ignore both signals unless the main
process sends them (``ignore_stop_signals``): a terminal's Ctrl-C and ``timeout`` signal the
whole process group, and a worker killed by one would make the main process fail with
"DataLoader worker ... killed by signal" instead of stopping cleanly; the main process ends
them when it is done.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(KeyboardInterrupt):
    """A run stopped by a signal or the callback. ``checkpoint``: the checkpoint.pt to continue
    from with --resume, None when nothing was saved; ``signum``: the signal (None: callback)."""

    def __init__(self, checkpoint: Path | None = None, signum: int | None = None) -> None:
        super().__init__(f"stopped; continue from {checkpoint} with --resume" if checkpoint
                         else "stopped before a checkpoint was written")
        self.checkpoint = checkpoint
        self.signum = signum


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopRequest:
    """Context manager turning the first Ctrl-C / SIGTERM into a flag checked between steps;
    a second Ctrl-C interrupts at once. ``signum`` is the signal received (None: none yet)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequest:
        if _on_main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _sender_unknown(signum, frame) -> None:
    """A SIGTERM that reached a thread not blocking it: ignored (see ``ignore_stop_signals``)."""


def _exit_on_sigterm_from(main: int) -> None:
    """Wait for SIGTERMs (blocked in the worker); exit on one from ``main``, ignore others."""
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == main:
            os._exit(0)


def ignore_stop_signals(_worker_id: int = 0, main: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: leave Ctrl-C and SIGTERM to the main process, which
    checkpoints and then stops the workers.

    SIGINT is ignored. SIGTERM is blocked and a thread waits for it: one from the ``main``
    process (default: the parent; DataLoader and multiprocessing end their workers with
    SIGTERM) ends the worker at once, any other (``timeout``, ``kill`` of the process group) is
    ignored. A thread started before this call does not block it (under the spawn and
    forkserver start methods importing torch starts one): a SIGTERM it receives runs a handler
    that ignores it, since it cannot tell who sent it; such a worker still ends when DataLoader
    tells it to, or when the main process is gone. Without ``sigwaitinfo`` (macOS) SIGTERM
    keeps its default action.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        return
    # a handler, not SIG_IGN: an ignored signal is discarded, never reaching sigwaitinfo
    signal.signal(signal.SIGTERM, _sender_unknown)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_on_sigterm_from, args=(main or os.getppid(),), daemon=True,
                     name="geopix2pix-sigterm").start()
