"""Exceptions that name what was wrong: the input, the value and what was expected."""

from __future__ import annotations

from typing import Any


class ArdragError(Exception):
    """Base of ardrag's own errors."""


class ConfigError(ArdragError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class SampleValidationError(ArdragError, ValueError):
    """A sample field has the wrong type, shape or value."""

    def __init__(self, field: str, value: Any, expected: str, key: str | None = None):
        self.field = field
        self.expected = expected
        self.key = key
        where = f"sample {key!r}: " if key else ""
        super().__init__(f"{where}field '{field}' is {describe(value)}; expected {expected}")


class ShardError(ArdragError):
    """A shard or manifest cannot be read or written."""


class DecodeError(ArdragError):
    """A video could not be decoded."""


def describe(value: Any) -> str:
    """A short description of a value for error messages (arrays by dtype and shape, not contents)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"an array of dtype {dtype} and shape {tuple(shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
