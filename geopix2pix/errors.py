"""Errors a user can fix: the CLI prints them on one line and exits with status 2."""


class GeoPix2PixError(Exception):
    """Bad input the user can fix: the CLI prints it on one line and exits with status 2."""
