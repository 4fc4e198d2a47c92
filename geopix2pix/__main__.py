"""`python -m geopix2pix` (what torchrun launches) runs the command-line interface."""

from geopix2pix.cli import run

if __name__ == "__main__":
    run()
