"""The `geopix2pix` program and `python -m geopix2pix` (what torchrun launches): load the
command-line interface and run it. Loading takes a moment (torch), and a Ctrl-C then ends
the program as it does later ("Aborted.", exit status 130), not with a traceback from an import."""

import sys


def run() -> None:
    try:
        from geopix2pix.cli import run as run_cli
    except KeyboardInterrupt:
        print("Aborted.", file=sys.stderr)
        sys.exit(130)
    run_cli()


if __name__ == "__main__":
    run()
