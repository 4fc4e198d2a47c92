"""Ctrl-C and SIGTERM while the predict pipeline runs: raised where it is safe, not anywhere.

Python raises a signal's KeyboardInterrupt in the main thread between any two bytecodes, also
at the entry of a Python-level ``__exit__`` that would release a lock (a Condition's, as
``Future.result`` and ``queue.Queue`` use). Raised there, the lock stays held, and a model or
stage thread then waits for it forever while the main thread joins it: Ctrl-C froze predict
(seen once in about 110 tries). While the pipeline runs, the first Ctrl-C or SIGTERM therefore
only stops it (the stages give up at their next put or get, the model finishes its batch) and
is delivered to the handler it would have reached once the threads are joined; a second Ctrl-C
is delivered at once, as before.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from geopix2pix.prediction.engine.channels import StopFlag

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Deferred:
    """The stop signals received while the pipeline ran, and the handlers they were meant for."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop
        self.received: list[int] = []
        self.previous: dict[int, object] = {}

    def handle(self, signum: int, frame) -> None:
        """Takes no lock: it may run while the main thread holds any."""
        if self.received and signum == signal.SIGINT:  # a second Ctrl-C: now
            self.deliver(signum, frame)
        self.received.append(signum)
        self.stop.set()

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
def deferred_stop_signals(stop: StopFlag) -> Iterator[Deferred]:
    """Within the block, the first Ctrl-C/SIGTERM sets `stop`; the first one received is
    delivered when the block ends (only in the main thread, where Python runs handlers)."""
    deferred = Deferred(stop)
    if threading.current_thread() is not threading.main_thread():
        yield deferred
        return
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # ignored: stays so
            deferred.previous[signum] = signal.signal(signum, deferred.handle)
    try:
        yield deferred
    finally:
        for signum, handler in deferred.previous.items():
            signal.signal(signum, handler)
    if deferred.received:
        deferred.deliver(deferred.received[0])
        # a handler that returned has not undone the stop: the run is incomplete all the same
        raise KeyboardInterrupt
