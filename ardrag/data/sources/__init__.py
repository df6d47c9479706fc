"""Where samples come from: one small protocol and an explicit registry from name to implementation.

A source yields validated :class:`~ardrag.data.sample.Sample` records and knows how many it will yield
(for progress bars and shard planning). Later sources ("folder", "wan") are added to :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from ardrag.data.sample import Sample
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource


@runtime_checkable
class VideoSource(Protocol):
    """Anything that yields validated samples and knows how many it will yield."""

    def samples(self) -> Iterator[Sample]: ...

    def __len__(self) -> int: ...


SOURCES: dict[str, type[VideoSource]] = {"procedural": ProceduralSource}

__all__ = ["SOURCES", "ProceduralConfig", "ProceduralSource", "VideoSource"]
