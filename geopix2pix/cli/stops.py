"""What a command stopped by Ctrl-C or SIGTERM says of its outputs: the line of the library's
`StopReport` (`runtime.stopping`; no "Error:", exit status 128 + the signal), rather than a bare
"Aborted.". The library that ran the command knows what it left; the command only prints it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from geopix2pix.runtime.ranks import speaks
from geopix2pix.runtime.stopping import Reporter, stop_signal


class Stopped(click.ClickException):
    """A run stopped by Ctrl-C or SIGTERM: its one line (no "Error:"), exit 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)

    def show(self, file=None) -> None:
        if self.message:
            click.echo(self.message, err=True)


def reports_stop(reporter: Callable[[dict], Reporter]) -> Callable[[Callable], Callable]:
    """Decorator of a command's callback: a Ctrl-C or SIGTERM (KeyboardInterrupt, or the
    program's `Terminated`) ends it with `Stopped`, saying the `StopReport` the library attached
    to the interrupt, or (a stop outside the library's call) the one that `reporter(params)`,
    asked before the run with the command's parameters, makes of it. Under torchrun only rank
    0 speaks."""

    def decorate(callback: Callable) -> Callable:
        @functools.wraps(callback)
        def run(**params):
            report = None
            try:
                report = reporter(params)  # (it loads the library: a stop may come meanwhile)
                return callback(**params)
            except KeyboardInterrupt as exc:
                stopped = getattr(exc, "report", None) or (report(exc) if report else None)
                line, signum = (stopped.line, stopped.signum) if stopped else (
                    "Stopped while the command was loading: nothing was written",
                    stop_signal(exc))
                raise Stopped(line if speaks() else "", signum) from None

        return run

    return decorate


def export_stopped(params: dict) -> Reporter:
    """export-chips: `chips.manifest.stop_reporter`."""
    from geopix2pix.chips.manifest import stop_reporter

    return stop_reporter(params["out_dir"])


def predict_stopped(params: dict) -> Reporter:
    """predict: `prediction.outputs.stop_reporter` (SCENE OUT, or SCENES... --out-dir)."""
    from geopix2pix.prediction.outputs import stop_reporter

    paths, out_dir = list(params.get("paths", ())), params.get("out_dir")
    if out_dir is None:
        return stop_reporter(paths[:1], paths[1] if len(paths) == 2 else None)
    return stop_reporter(paths, None, out_dir)


def train_stopped(params: dict) -> Reporter:
    """train: `training.outputs.stop_reporter`."""
    from geopix2pix.training.outputs import stop_reporter

    return stop_reporter(params["out_dir"])


def demo_stopped(params: dict) -> Reporter:
    """demo: `demo.pipeline.stop_reporter`."""
    from geopix2pix.demo.pipeline import stop_reporter

    return stop_reporter(params["out_dir"])
