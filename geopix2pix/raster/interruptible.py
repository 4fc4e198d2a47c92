"""Calls into GDAL that Ctrl-C and SIGTERM still stop: opening a raster can block for a long
time (a slow network file system, a /vsicurl/ server that does not answer), and a signal that
arrives meanwhile must stop the program at once, as it does anywhere else.

Python runs signal handlers in the main thread only, between its own instructions. In a
blocking GDAL call it runs them inside rasterio's logging callback, whose exceptions are printed
("Exception ignored in ...") and dropped, so the stop was lost and the open then failed as an
unreadable file. `interruptible` makes the call in a helper thread (with both signals blocked
there, so they reach the main thread) while the main thread waits, where the program's handler
raises KeyboardInterrupt (or the program's Terminated) as usual. The helper, if abandoned, closes
whatever its call opened once the call returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from geopix2pix.runtime.stopping import STOP_SIGNALS

T = TypeVar("T")
POLL = 0.05  # seconds between the main thread's checks for a pending signal


class _Call:
    """One call made in a helper thread: its result or exception, once done."""

    def __init__(self, function: Callable[..., Any], args: tuple) -> None:
        self.function, self.args = function, args
        self.done = threading.Event()
        self.abandoned = False
        self.lock = threading.Lock()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        if hasattr(signal, "pthread_sigmask"):  # the main thread takes the stop signals
            signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
        with self.lock:
            self.done.set()
            if self.abandoned:
                _close(self.result)

    def abandon(self) -> None:
        """The caller stopped waiting: close the result now, or when the call returns."""
        with self.lock:
            self.abandoned = True
            if self.done.is_set():
                _close(self.result)


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def interruptible(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`, during which a signal stops the program promptly: on the main thread
    the call runs in a helper thread while this one waits; elsewhere (a reading thread, which
    signals never interrupt) it is made directly."""
    if threading.current_thread() is not threading.main_thread():
        return function(*args)
    call = _Call(function, args)
    helper = threading.Thread(target=call.run, daemon=True, name="geopix2pix-open")
    helper.start()
    try:
        while not call.done.wait(POLL):  # a signal's handler raises here, between the waits
            pass
    except BaseException:
        call.abandon()
        raise
    helper.join()
    if call.error is not None:
        raise call.error
    # GDAL's error state is per thread: the open in the helper left this thread's as it was,
    # where rasterio would raise an error an earlier call left there
    from geopix2pix.raster.gdal_log import reset_gdal_errors

    reset_gdal_errors()
    return call.result
