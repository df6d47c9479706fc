"""One config system: pydantic models, validated at the edge, YAML files parsed into the same types.

Every config class derives from :class:`Config` (unknown keys are errors, values are checked on
construction). :func:`load_config` reads a YAML file into a config class and turns pydantic's errors
into one message that names the file, the field, the value and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every ardrag config: strict about unknown keys, immutable, JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A short content hash of the resolved config (used to key outputs and caches)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  - {field} = {shown}: {e['msg']}")
    return "\n".join(lines)


def build_config(cls: type[C], data: dict[str, Any] | None, source: str = "<arguments>") -> C:
    """Validate ``data`` into ``cls``; a failure raises :class:`ConfigError` naming field and value."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, at every depth; any other value replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping a YAML (or JSON) config file holds; a clear error when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist (expected a YAML file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} holds a {type(data).__name__}; expected a mapping of field: value"
        )
    return data


def load_config(
    cls: type[C],
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    base: dict[str, Any] | None = None,
    source: str | None = None,
) -> C:
    """The one way a config is resolved: ``base`` (a preset's fields), then the YAML file at ``path``,
    then ``overrides`` (e.g. the command line's; a top-level None means "not given" and is left out, so
    no field is cleared from there), merged key by key and validated into ``cls``. ``source`` names the
    origin in errors (default: the file, else the arguments)."""
    data = dict(base or {})
    if path is not None:
        data = merge(data, read_config_file(path))
    data = merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    origin = source or (str(path) if path is not None else "<arguments>")
    return build_config(cls, data, source=origin)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def datasets_dir() -> Path:
    """Where dataset definitions live: ``$ARDRAG_DATASETS_DIR``, else the checkout's ``datasets/``."""
    env = os.environ.get("ARDRAG_DATASETS_DIR")
    path = Path(env) if env else repo_root() / "datasets"
    if not path.is_dir():
        raise ConfigError(
            f"dataset definitions folder {str(path)!r} not found; set ARDRAG_DATASETS_DIR to the "
            "'datasets/' folder of an ardrag checkout"
        )
    return path


def write_resolved_config(config: Config, directory: str | os.PathLike[str], name: str = "config") -> Path:
    """Write the resolved config next to an output, atomically, as YAML."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return atomic_write(directory / f"{name}.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
