"""The studio server's settings, in one place: ``ardrag studio``'s options parse into them."""

from __future__ import annotations

from pydantic import Field

from ardrag.config import Config
from ardrag.presets import TOY

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StudioSettings(Config):
    host: str = Field("127.0.0.1", description="address to bind; loopback by default (warned otherwise)")
    port: int = Field(7860, ge=0, le=65535, description="port (0: any free port)")
    preset: str | None = Field(TOY, description="model preset (toy: the shipped toy model; tiny: random)")
    checkpoint: str | None = Field(None, description="a student checkpoint folder")
    model: str | None = Field(None, description="the Wan model (hub id or folder) beside --checkpoint")
    device: str | None = Field(None, description="device (default: CUDA when present, else CPU)")
    seed: int = Field(0, ge=0, description="the streams' noise seed (replays use it)")
    prompt: str = Field("an object moves along the drag", min_length=1, description="the first prompt")
    max_sessions: int = Field(8, ge=1, le=1024, description="sessions at once; more are told to retry")
    idle_timeout_s: float = Field(300.0, gt=0, description="a session without activity this long is closed")
    max_upload_bytes: int = Field(10 * 2**20, gt=0, description="largest image upload")
    max_image_pixels: int = Field(40_000_000, gt=0, description="largest decoded upload (width x height)")
    max_frames: int = Field(2001, ge=1, description="frames per stream (about 2 minutes at 16 fps)")
    warmup: bool = Field(True, description="run one step at start-up, so the first visitor waits less")

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK
