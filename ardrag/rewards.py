"""Per-frame rewards of generated video (paper Eq. 12, 15, 16): a registry of plain functions.

Each reward takes the decoded video (uint8 (T, H, W, 3)) and the sample's controls, and returns one value
per pixel frame (float64 (T,)); :func:`latent_frame_rewards` averages them over the pixel frames of each
latent frame (1, then 4 each), which is what GRPO's per-frame advantages use.

- ``aesthetic`` (Eq. 15): a CLIP image embedding (L2-normalised) through an MLP head in the format of
  LAION's improved aesthetic predictor (``layers.0`` .. ``layers.7``: 768 -> 1024 -> 128 -> 64 -> 16 -> 1
  for ViT-L/14). The head predicts AVA scores, roughly 1 to 10; the paper states 1 to 5, so the reward
  maps linearly: 1 + 4 (score - 1) / 9 (AVA 1 -> 1, 10 -> 5; not clipped). Weights come from local paths
  (a CLIP folder and the head's .pth / .safetensors file); :meth:`AestheticScorer.tiny` builds a random
  small CLIP and head for tests.
- ``motion`` (Eq. 16): the target points visible at frame 0 are tracked through the generated frames
  with a tracker of ``ardrag.data.trackers`` (opencv by default; CoTracker in the paper), and per frame
  reward = lambda * max(0, alpha - e), e the mean over target-visible points of the squared distance
  between tracked and target position, with x divided by the width and y by the height (so the units are
  fractions of the frame and the figures do not depend on the resolution). Defaults alpha = 0.01 (a
  point 10 % of the frame off earns nothing) and lambda = 100 (a perfect frame earns 1). A frame with no
  visible target point earns lambda * alpha (nothing to disagree with).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ardrag.console import route_library_logs
from ardrag.errors import ConfigError, describe

RewardFn = Callable[..., np.ndarray]
REWARDS: dict[str, RewardFn] = {}


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    def add(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return add


def check_video(video: Any, name: str = "video") -> np.ndarray:
    """A clear error for anything but a non-empty uint8 (T, H, W, 3) array."""
    if (
        not isinstance(video, np.ndarray)
        or video.dtype != np.uint8
        or video.ndim != 4
        or video.shape[-1] != 3
    ):
        raise ValueError(f"{name} is {describe(video)}; expected a uint8 RGB array of shape (T, H, W, 3)")
    if 0 in video.shape:
        raise ValueError(f"{name} is {describe(video)}; expected at least one frame of non-zero size")
    return video


# -- aesthetic -----------------------------------------------------------------------------------
class AestheticHead(nn.Module):
    """LAION's improved aesthetic predictor's MLP (key names ``layers.N.*`` as in its released file)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding).squeeze(-1)


class AestheticScorer:
    """CLIP image embedding + LAION head; :meth:`score` gives AVA-scale scores per frame."""

    def __init__(self, clip: Any, head: AestheticHead, image_size: int, mean: list[float], std: list[float]):
        self.clip, self.head = clip.eval(), head.eval()
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @classmethod
    def from_paths(cls, clip_path: str, head_path: str) -> AestheticScorer:
        """A ``CLIPVisionModelWithProjection`` folder (or a full CLIP folder) and the head's weights."""
        route_library_logs()
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        for path in (clip_path, head_path):
            if not Path(path).exists():
                raise ConfigError(
                    f"aesthetic model path {path!r} does not exist (weights load from local paths)"
                )
        clip = CLIPVisionModelWithProjection.from_pretrained(clip_path)
        head = AestheticHead(clip.config.projection_dim)
        if str(head_path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(head_path)
        else:
            state = torch.load(head_path, map_location="cpu", weights_only=True)
        head.load_state_dict(state)
        proc = CLIPImageProcessor.from_pretrained(clip_path)
        return cls(clip, head, proc.crop_size["height"], proc.image_mean, proc.image_std)

    @classmethod
    def tiny(cls, seed: int = 0) -> AestheticScorer:
        """Random weights at toy size (32-pixel crops, 16-dim embedding), offline."""
        route_library_logs()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            config = CLIPVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, projection_dim=16,
            )  # fmt: skip
            clip = CLIPVisionModelWithProjection(config)
            head = AestheticHead(16)
        mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
        return cls(clip, head, 32, mean, std)

    def _pixels(self, video: np.ndarray) -> torch.Tensor:
        """Resize the shorter side to the crop size (bicubic, antialiased), centre crop, normalise."""
        x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
        h, w = x.shape[2:]
        scale = self.image_size / min(h, w)
        size = (max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        x = x[:, :, top : top + self.image_size, left : left + self.image_size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def score(self, video: np.ndarray, batch: int = 32) -> np.ndarray:
        """AVA-scale aesthetic score of every frame, float64 (T,)."""
        video = check_video(video)
        device = next(self.clip.parameters()).device
        out = []
        for i in range(0, len(video), batch):
            emb = self.clip(pixel_values=self._pixels(video[i : i + batch]).to(device)).image_embeds
            out.append(self.head(F.normalize(emb.float(), dim=-1)).double().cpu())
        return torch.cat(out).numpy()


def ava_to_paper_scale(score: np.ndarray) -> np.ndarray:
    """AVA 1..10 -> the paper's 1..5, linearly."""
    return 1 + 4 * (np.asarray(score, np.float64) - 1) / 9


@register("aesthetic")
def aesthetic_reward(video: np.ndarray, *, scorer: AestheticScorer, **_: Any) -> np.ndarray:
    return ava_to_paper_scale(scorer.score(video))


# -- motion --------------------------------------------------------------------------------------
@register("motion")
def motion_reward(video: np.ndarray, *, tracks: np.ndarray, visible: np.ndarray, tracker: Any,
                  alpha: float = 0.01, lam: float = 100.0, **_: Any) -> np.ndarray:  # fmt: skip
    """lambda * max(0, alpha - e) per frame (see the module docstring); ``tracks`` (T, N, 2) pixels of
    ``video``'s size, ``visible`` (T, N)."""
    video = check_video(video)
    t, h, w = video.shape[:3]
    tracks, visible = np.asarray(tracks, np.float32), np.asarray(visible, bool)
    if tracks.ndim != 3 or tracks.shape[0] != t or tracks.shape[2] != 2 or visible.shape != tracks.shape[:2]:
        raise ValueError(
            f"target tracks {describe(tracks)} and visible {describe(visible)} do not fit the video "
            f"{describe(video)}; expected tracks ({t}, N, 2) and visible ({t}, N), one row per frame"
        )
    start = np.flatnonzero(visible[0])
    out = np.full(t, lam * alpha, np.float64)
    if start.size == 0:
        return out
    queries = np.concatenate([np.zeros((start.size, 1), np.float32), tracks[0, start]], axis=1)
    found = tracker.track(video, queries).tracks  # (T, n, 2)
    scale = np.array([w, h], np.float64)
    err = (((found - tracks[:, start]) / scale) ** 2).sum(-1)  # (T, n)
    seen = visible[:, start]
    for i in range(t):
        if seen[i].any():
            out[i] = lam * max(0.0, alpha - float(err[i, seen[i]].mean()))
    return out


def latent_frame_rewards(per_pixel_frame: np.ndarray) -> np.ndarray:
    """Mean over each latent frame's pixel frames (frame 0 alone, then 4 each): (T,) -> (1 + (T-1)/4,)."""
    r = np.asarray(per_pixel_frame, np.float64)
    if r.ndim != 1 or (len(r) - 1) % 4:
        raise ValueError(f"rewards of {describe(r)}; expected one per pixel frame of a 4k + 1 frame video")
    return np.concatenate([r[:1], r[1:].reshape(-1, 4).mean(1)])
