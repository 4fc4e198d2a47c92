"""Stopping a run: Ctrl-C (SIGINT) and SIGTERM (``kill``, ``timeout``, a batch scheduler) alike.

The `geopix2pix` program makes SIGTERM raise ``Terminated`` (a KeyboardInterrupt), as Ctrl-C
does, so outputs being written are removed on the way out. Where stopping at any bytecode is not
safe, ``StopRequest`` turns the first of either signal into a flag: training checks it between
steps (it finishes the step, writes checkpoint.pt and raises `training.TrainingStopped`, which
says where the checkpoint is); prediction's stages give up at their next put or get and the
signal is delivered once the threads are joined (``deferred_stop_signals``). A second Ctrl-C
interrupts at once. DataLoader workers ignore both signals unless the main process sends them
(``ignore_stop_signals``): a terminal's Ctrl-C and ``timeout`` signal the whole process group,
and a worker killed by one would make the main process fail with "DataLoader worker ... killed
by signal" instead of stopping cleanly; the main process ends them when it is done.

What a stopped run left is a ``StopReport``, written by the library that ran it (which owns the
names of its outputs); the command prints its line.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def end_with_parent(parent: int, every: float = 0.5) -> None:
    """A worker process's initializer: end the worker (``os._exit``) once its parent `parent`
    is gone. A parent killed with SIGKILL cannot end its workers, which would otherwise wait
    for work forever, holding the killed command's stdout and stderr open (a pipeline reading
    them would hang)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


_launcher_watched = False


def stop_with_launcher(every: float = 0.5) -> None:
    """A torchrun rank: stop as SIGTERM stops it (at the end of the step, checkpoint saved, the
    ranks together) once the torchrun that started it is gone. torchrun stops its ranks when it
    is stopped, but killed itself (SIGKILL, the OOM killer) it cannot: its ranks trained on to
    the end of the run, writing a run folder the user took for abandoned (with --overwrite,
    replacing the earlier run). Once per process."""
    global _launcher_watched
    if _launcher_watched:
        return
    _launcher_watched = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="geopix2pix-stop-with-launcher", daemon=True).start()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a batch scheduler), raised where the program is, as Ctrl-C is:
    outputs being written are removed on the way out, as after Ctrl-C."""

    signum = signal.SIGTERM  # read by what reports how a run stopped


def raise_terminated(signum, frame) -> None:
    """The program's SIGTERM handler."""
    raise Terminated


class StopRequest:
    """Context manager turning the first Ctrl-C / SIGTERM into a flag (``requested``; ``signum``
    is the signal, None: none yet), also calling `on_stop`, which must take no lock; a second
    Ctrl-C interrupts at once. `keep_ignored`: a signal ignored before (a background job's
    SIGINT) stays ignored."""

    def __init__(self, on_stop: Callable[[], None] | None = None,
                 keep_ignored: bool = False) -> None:
        self.requested = False
        self.signum: int | None = None
        self.on_stop = on_stop
        self.keep_ignored = keep_ignored
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            self.interrupt(signum, frame)
        self.requested = True
        self.signum = self.signum or signum
        if self.on_stop is not None:
            self.on_stop()

    def interrupt(self, signum: int, frame) -> None:
        """A second Ctrl-C: KeyboardInterrupt now."""
        raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if _on_main_thread():  # Python runs handlers only there
            for sig in STOP_SIGNALS:
                if self.keep_ignored and signal.getsignal(sig) in (signal.SIG_IGN, None):
                    continue
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class DeferredStop(StopRequest):
    """A stop delivered late: the signal goes to the handler it was meant for once the block
    ends (a second Ctrl-C at once)."""

    def interrupt(self, signum: int, frame) -> None:
        self.deliver(signum, frame)

    def deliver(self, signum: int, frame=None) -> None:
        """Run the handler `signum` was meant for (raising KeyboardInterrupt or the program's
        Terminated), or its default action."""
        handler = self.previous.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)


@contextlib.contextmanager
def deferred_stop_signals(on_stop: Callable[[], None]) -> Iterator[DeferredStop]:
    """Within the block, the first Ctrl-C/SIGTERM calls `on_stop` (which must take no lock: it
    may run while the main thread holds any); the first one received is delivered when the
    block ends (only in the main thread, where Python runs handlers), and the block counts as
    stopped even if its handler returns (KeyboardInterrupt). For threads: Python raises a
    signal's KeyboardInterrupt between any two bytecodes, also at the entry of an ``__exit__``
    that would release a lock (a Condition's, as ``Future.result`` and ``queue.Queue`` use);
    raised there the lock stays held and a thread waits for it forever (Ctrl-C froze predict
    about once in 110 tries)."""
    with DeferredStop(on_stop, keep_ignored=True) as deferred:
        yield deferred
    if deferred.requested:
        deferred.deliver(deferred.signum)
        # a handler that returned has not undone the stop: the run is incomplete all the same
        raise KeyboardInterrupt


@dataclass(frozen=True)
class StopReport:
    """What a run stopped by Ctrl-C or SIGTERM left, said by the library that ran it: the
    command, the signal, the outputs it completed, the earlier output it kept as it was (None:
    none), the checkpoint to continue from with --resume (None: none), and the one line a
    command prints."""

    command: str
    signum: int
    line: str
    completed: tuple[Path, ...] = ()
    kept: Path | None = None
    resume: Path | None = None

    def __str__(self) -> str:
        return self.line


Reporter = Callable[[BaseException], StopReport]
F = TypeVar("F", bound=Callable[..., Any])


def attaches_stop_report(reporter_for: Callable[[dict], Reporter | None]) -> Callable[[F], F]:
    """Decorator of a library entry point: a stop (KeyboardInterrupt) it raises carries
    ``report``, the `StopReport` of the reporter that `reporter_for` (called before the run
    with the call's arguments by name, defaults included) returns; None: no report."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args, **kwargs):
            reporter = _reporter(signature, reporter_for, args, kwargs)
            try:
                return function(*args, **kwargs)
            except KeyboardInterrupt as stop:
                if reporter is not None and getattr(stop, "report", None) is None:
                    stop.report = reporter(stop)
                raise

        return cast(F, run)

    return decorate


def _reporter(signature: inspect.Signature, reporter_for: Callable[[dict], Reporter | None],
              args: tuple, kwargs: dict) -> Reporter | None:
    """`reporter_for` of the call's arguments; None for arguments the call itself refuses (it
    says what is wrong with them), such as a missing or mistyped folder (Path(None) is a
    TypeError)."""
    try:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return reporter_for(bound.arguments)
    except (TypeError, ValueError):
        return None


def stop_signal(stop: BaseException) -> int:
    """The signal that caused `stop` (SIGINT unless it says SIGTERM)."""
    return getattr(stop, "signum", None) or signal.SIGINT


class Outputs:
    """Files a run puts in place whole, with their identities before it ran."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.before = [_identity(path) for path in self.paths]

    def finished(self) -> list[Path]:
        """The outputs put in place since: there now, and not the files that were there."""
        return [path for path, before in zip(self.paths, self.before)
                if _identity(path) not in (None, before)]

    def kept(self) -> list[Path]:
        """The outputs that were there before the run and are still there, untouched."""
        return [path for path, before in zip(self.paths, self.before)
                if before is not None and _identity(path) == before]


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, modification time) of `path`, or None when nothing is there."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def _sender_unknown(signum, frame) -> None:
    """A SIGTERM that reached a thread not blocking it: ignored (see ``ignore_stop_signals``)."""


def _exit_on_sigterm_from(main: int) -> None:
    """Wait for SIGTERMs (blocked in the worker); exit on one from ``main``, ignore others."""
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == main:
            os._exit(0)


def _end_with_parent() -> None:
    """Linux: this process is killed when its parent ends (PR_SET_PDEATHSIG), which a worker
    that ignores the terminal's signals needs: one whose main process the kernel's OOM killer
    ended lived on for minutes, holding the caller's pipe."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # (it ended before the call)
        os._exit(1)


def ignore_stop_signals(_worker_id: int = 0, main: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: leave Ctrl-C and SIGTERM to the main process, which
    checkpoints and then stops the workers.

    SIGINT is ignored. SIGTERM is blocked and a thread waits for it: one from the ``main``
    process (default: the parent; DataLoader and multiprocessing end their workers with
    SIGTERM) ends the worker at once, any other (``timeout``, ``kill`` of the process group) is
    ignored. A thread started before this call does not block it (under the spawn and
    forkserver start methods importing torch starts one): a SIGTERM it receives runs a handler
    that ignores it, since it cannot tell who sent it; such a worker still ends when DataLoader
    tells it to, or when the main process is gone (on Linux at once: `_end_with_parent`). Without
    ``sigwaitinfo`` (macOS) SIGTERM keeps its default action.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    if not hasattr(signal, "sigwaitinfo"):
        return
    # a handler, not SIG_IGN: an ignored signal is discarded, never reaching sigwaitinfo
    signal.signal(signal.SIGTERM, _sender_unknown)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_on_sigterm_from, args=(main or os.getppid(),), daemon=True,
                     name="geopix2pix-sigterm").start()
