"""The plumbing between the predict pipeline's threads: bounded channels whose put and get give
up once the pipeline is stopped, and threads that record their error and stop the others."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

QUEUE_DEPTH = 4
DONE = object()  # the last item a stage sends


class Stopped(Exception):
    """Another stage failed; this one gives up quietly."""


class StopFlag:
    """Set once to stop the pipeline; the stages poll it. A plain attribute, unlike an Event
    (whose set takes a lock): a signal handler may set it whatever the code it interrupted
    holds."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass
class Channel:
    """A bounded queue whose put/get give up when the pipeline is stopped."""

    stop: StopFlag
    depth: int = QUEUE_DEPTH

    def __post_init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(self.depth)

    def put(self, item) -> None:
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self):
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                return self.queue.get(timeout=0.05)
            except queue.Empty:
                continue

    def __iter__(self) -> Iterator:
        while (item := self.get()) is not DONE:
            yield item


class Stage(threading.Thread):
    """A pipeline thread recording its exception and stopping the others on failure."""

    def __init__(self, target: Callable[[], None], stop: StopFlag, name: str):
        super().__init__(name=name, daemon=True)
        self._target_fn, self._stop_event, self.error = target, stop, None

    def run(self) -> None:
        try:
            self._target_fn()
        except Stopped:
            pass
        except BaseException as exc:  # re-raised in the caller
            self.error = exc
            self._stop_event.set()
