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
- ``step_following`` (TempAct's executor RL, step-wise prompts while streaming): per frame, the cosine
  similarity (in [-1, 1], not rescaled) of the frame's CLIP image embedding with the CLIP text embedding
  of the step prompt active at that frame (``frame_prompts``, one per pixel frame, as the tempact stage
  supplies). :class:`TextImageScorer` loads a full transformers ``CLIPModel`` folder with its tokenizer
  and image processor from a local path; :meth:`TextImageScorer.tiny` builds a random small CLIP with the
  byte-level tokenizer of ``ardrag.model.tiny`` for tests. Frames are preprocessed as for ``aesthetic``.
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


# OpenAI CLIP's normalisation, which the tiny scorers use too
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(video: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """CLIP's preprocessing of uint8 (T, H, W, 3) frames: resize the shorter side to ``size`` (bicubic,
    antialiased), centre crop ``size`` x ``size``, normalise with ``mean`` and ``std`` (1, 3, 1, 1)."""
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[2:]
    scale = size / min(h, w)
    resized = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(x, size=resized, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    return (x - mean) / std


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
        return cls(clip, head, 32, list(CLIP_MEAN), list(CLIP_STD))

    @torch.no_grad()
    def score(self, video: np.ndarray, batch: int = 32) -> np.ndarray:
        """AVA-scale aesthetic score of every frame, float64 (T,)."""
        video = check_video(video)
        device = next(self.clip.parameters()).device
        out = []
        for i in range(0, len(video), batch):
            pixels = clip_pixels(video[i : i + batch], self.image_size, self.mean, self.std)
            emb = self.clip(pixel_values=pixels.to(device)).image_embeds
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


# -- step following ------------------------------------------------------------------------------
TINY_TEXT_TOKENS = 128  # the tiny CLIP's text length; the byte-level tokenizer spends a token per byte


class TextImageScorer:
    """CLIP text and image towers in one embedding space; :meth:`similarity` gives each frame's cosine
    similarity with its text. The model lives in ``.model`` (a stage moves it with ``.to(device)``)."""

    def __init__(self, model: Any, tokenizer: Any, image_size: int, mean: list[float], std: list[float]):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.max_tokens = model.config.text_config.max_position_embeddings

    @classmethod
    def from_path(cls, path: str) -> TextImageScorer:
        """A full transformers ``CLIPModel`` folder with its tokenizer and image processor config."""
        if not Path(path).is_dir():
            raise ConfigError(
                f"text-image model path {path!r} does not exist or is not a folder (a CLIPModel folder "
                "with its tokenizer and preprocessor_config.json; weights load from local paths)"
            )
        if not any((Path(path) / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            # transformers would build an empty CLIPTokenizer (two ids) and every text would embed alike
            raise ConfigError(
                f"text-image model path {path!r} has no tokenizer (tokenizer.json, or vocab.json and "
                "merges.txt); save the CLIP tokenizer beside the model"
            )
        route_library_logs()
        from transformers import AutoTokenizer, CLIPModel

        from ardrag.model.tiny import clip_image_processor_class

        try:
            model = CLIPModel.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
            proc = clip_image_processor_class().from_pretrained(path)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"text-image model path {path!r} cannot be loaded as a CLIPModel folder with its tokenizer "
                f"and image processor: {e}"
            ) from e
        return cls(model, tokenizer, proc.crop_size["height"], list(proc.image_mean), list(proc.image_std))

    @classmethod
    def tiny(cls, seed: int = 0) -> TextImageScorer:
        """Random weights at toy size (32-pixel crops, 16-dim embedding) and the byte-level tokenizer of
        ``ardrag.model.tiny``, built offline; deterministic for ``seed``, leaves the global RNG untouched."""
        route_library_logs()
        from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

        from ardrag.model.tiny import byte_tokenizer

        tokenizer = byte_tokenizer()
        tokenizer.model_max_length = TINY_TEXT_TOKENS
        shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        text = CLIPTextConfig(
            vocab_size=len(tokenizer), max_position_embeddings=TINY_TEXT_TOKENS, **shape,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        vision = CLIPVisionConfig(image_size=32, patch_size=8, **shape)
        config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        return cls(model, tokenizer, 32, list(CLIP_MEAN), list(CLIP_STD))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings (n, d) on the model's device; texts longer than the text tower's
        positions are truncated."""
        if isinstance(texts, str) or not all(isinstance(s, str) for s in texts):
            raise ValueError(f"texts is {describe(texts)}; expected a list of strings")
        if not texts:
            return torch.empty(0, self.model.config.projection_dim, device=self.device)
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        tokens = {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask")}
        pooled = self.model.text_model(**tokens).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def embed_frames(self, video: np.ndarray, batch: int = 32) -> torch.Tensor:
        """L2-normalised image embeddings (T, d) of uint8 (T, H, W, 3) frames, on the model's device."""
        video = check_video(video)
        out = []
        for i in range(0, len(video), batch):
            pixels = clip_pixels(video[i : i + batch], self.image_size, self.mean, self.std)
            pooled = self.model.vision_model(pixel_values=pixels.to(self.device)).pooler_output
            out.append(self.model.visual_projection(pooled))
        return F.normalize(torch.cat(out).float(), dim=-1)

    def similarity(self, video: np.ndarray, texts: str | list[str]) -> np.ndarray:
        """Cosine similarity of each frame with its text, float64 (T,): ``texts`` is one string (every
        frame) or one per frame. Each distinct text is embedded once."""
        video = check_video(video)
        t = len(video)
        texts = [texts] * t if isinstance(texts, str) else list(texts)
        if len(texts) != t:
            raise ValueError(
                f"{len(texts)} texts for a video of {t} frames; expected one text for every frame or {t}, "
                "one per frame"
            )
        distinct = list(dict.fromkeys(texts))
        row = {text: i for i, text in enumerate(distinct)}
        text_emb = self.embed_texts(distinct)[torch.tensor([row[s] for s in texts], device=self.device)]
        cos = (self.embed_frames(video) * text_emb).sum(-1).clamp(-1, 1)
        return cos.double().cpu().numpy()


@register("step_following")
def step_following_reward(video: np.ndarray, *, text_scorer: TextImageScorer | None = None,
                          frame_prompts: list[str] | None = None, **_: Any) -> np.ndarray:  # fmt: skip
    """Cosine similarity (in [-1, 1]) of each pixel frame with the step prompt active at that frame."""
    video = check_video(video)
    missing = [name for name, value in (("frame_prompts", frame_prompts), ("text_scorer", text_scorer))
               if value is None]  # fmt: skip
    if missing:
        raise ConfigError(
            "the step_following reward needs step prompts (frame_prompts: a prompt per frame, as the "
            "tempact stage supplies) and a text-image scorer (text_scorer: a TextImageScorer); missing: "
            + ", ".join(missing)
        )
    return text_scorer.similarity(video, frame_prompts)


def latent_frame_rewards(per_pixel_frame: np.ndarray) -> np.ndarray:
    """Mean over each latent frame's pixel frames (frame 0 alone, then 4 each): (T,) -> (1 + (T-1)/4,)."""
    r = np.asarray(per_pixel_frame, np.float64)
    if r.ndim != 1 or (len(r) - 1) % 4:
        raise ValueError(f"rewards of {describe(r)}; expected one per pixel frame of a 4k + 1 frame video")
    return np.concatenate([r[:1], r[1:].reshape(-1, 4).mean(1)])
