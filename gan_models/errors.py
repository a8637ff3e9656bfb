"""Errors that the CLI reports as a clear message and a non-zero exit, without a traceback."""

from __future__ import annotations


class GanopsError(Exception):
    """A user error: bad input, bad params, missing files. The message says what and why."""

    exit_code = 2


class ConfigError(GanopsError):
    """A params file or an override names an unknown key or holds a value of the wrong type."""


class DataError(GanopsError):
    """A data source or a dataset on disk breaks one of the stated rules."""
