"""The `geopix2pix` program and `python -m geopix2pix` (what torchrun launches): load the
command-line interface and run it. Loading takes a moment (torch), and a Ctrl-C or SIGTERM then
ends the program as it does later ("Aborted.", exit status 130; "Terminated.", 143), not with a
traceback from an import, nor (SIGTERM's default) without a word."""

import signal
import sys


def run() -> None:
    from geopix2pix.runtime.ranks import stop_status
    from geopix2pix.runtime.stopping import Terminated, raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)  # first: the loading is most of a second
    try:
        from geopix2pix.cli import run as run_cli
    except KeyboardInterrupt as stop:
        sys.exit(stop_status(isinstance(stop, Terminated)))
    run_cli()


if __name__ == "__main__":
    run()
