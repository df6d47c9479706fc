"""Where clips come from: one small protocol and an explicit registry from name to implementation.

A source lists its inputs cheaply (:meth:`VideoSource.inputs`: files, synthesis jobs, procedural
indices, each with a content hash), then does the heavy work one input at a time
(:meth:`VideoSource.clips`), yielding bucketed constant-frame-rate :class:`~ardrag.data.clip.Clip`
records or raising :class:`~ardrag.data.clip.InputRejected` with a reason. One input is the unit of
work and of accounting in curation. Heavy models load in ``setup()``, never at construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from ardrag.config import build_config
from ardrag.data.clip import Clip, SourceInput
from ardrag.data.sources.folder import FolderConfig, FolderSource
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.sources.toy import ToyConfig, ToySource
from ardrag.data.sources.wan import WanConfig, WanSource
from ardrag.errors import ConfigError


@runtime_checkable
class VideoSource(Protocol):
    """Anything that lists inputs and turns one input into clips."""

    name: str

    def setup(self) -> None: ...

    def inputs(self) -> list[SourceInput]: ...

    def clips(self, item: SourceInput) -> Iterator[Clip]: ...


# name -> (implementation, its config class)
SOURCES: dict[str, tuple[type, type]] = {
    "procedural": (ProceduralSource, ProceduralConfig),
    "toy": (ToySource, ToyConfig),  # procedural clips with the toy model's look (the demo's data)
    "folder": (FolderSource, FolderConfig),
    "wan": (WanSource, WanConfig),
}


def build_source(name: str, config: dict[str, Any] | None = None, origin: str | None = None) -> Any:
    """A source by name from a config mapping (validated: errors name ``origin``, e.g. a settings file,
    the field and the value)."""
    if name not in SOURCES:
        raise ConfigError(f"source {name!r} is unknown; expected one of {sorted(SOURCES)}")
    cls, config_cls = SOURCES[name]
    return cls(build_config(config_cls, config or {}, source=origin or f"{name} source config"))


__all__ = [
    "SOURCES",
    "FolderConfig",
    "FolderSource",
    "ProceduralConfig",
    "ProceduralSource",
    "ToyConfig",
    "ToySource",
    "VideoSource",
    "WanConfig",
    "WanSource",
    "build_source",
]
