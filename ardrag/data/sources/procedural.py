"""Procedural clips with exactly known motion: the embedded default data and the tracker ground truth.

A clip is a static textured background with textured elliptical sprites translating over it along smooth
random paths. Sprites are shifted by exact bilinear sub-pixel interpolation (OpenCV's warps quantise
offsets to 1/32 pixel), so a sprite-local point (u, v) is at ``path[t] + (u, v)`` in every frame and the
tracks are ground truth, not estimates. Visibility follows from the same geometry: a point is hidden when
it leaves the frame or when a sprite in front of its own covers it (alpha >= 0.5 there).

Clip ``i`` depends only on ``(seed, i)`` and the drawing parameters, never on ``num_clips``. Textures are
the sample images that ship inside scikit-image, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from ardrag.config import Config
from ardrag.data.buckets import Bucket, resolve_buckets
from ardrag.data.clip import Clip, SourceInput
from ardrag.data.sample import Provenance, Sample, SourceInfo

logger = logging.getLogger(__name__)

# scikit-image's bundled sample images (file name -> noun for the prompt); none needs a download.
IMAGES = {
    "astronaut.png": "astronaut", "brick.png": "brick", "camera.png": "cameraman", "chelsea.png": "cat",
    "coffee.png": "coffee cup", "coins.png": "coin", "color.png": "colour wheel", "grass.png": "grass",
    "gravel.png": "gravel", "hubble_deep_field.jpg": "galaxy", "ihc.png": "tissue", "moon.png": "moon",
    "motorcycle_left.png": "motorcycle", "page.png": "book page", "retina.jpg": "retina",
    "rocket.jpg": "rocket", "text.png": "text",
}  # fmt: skip
WOBBLE_SPEED = 0.5  # px/frame: the most the sinusoidal wobble adds to a sprite's straight motion
DIRECTIONS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")


class ProceduralConfig(Config):
    """How procedural clips are drawn; every field has a default, so an empty YAML file is valid."""

    num_clips: int = Field(16, ge=1)  # clips the source yields
    seed: int = Field(0, ge=0)  # clip i is a function of (seed, i) and the fields below
    num_frames: int = Field(33, ge=2, le=1024)
    fps: float = Field(16.0, gt=0, le=240)
    buckets: list[str] = Field(default_factory=list)  # "WxH" names; empty: all of datasets/buckets.yaml
    min_sprites: int = Field(2, ge=1, le=8)
    max_sprites: int = Field(4, ge=1, le=8)
    min_points_per_sprite: int = Field(1, ge=1, le=16)
    max_points_per_sprite: int = Field(2, ge=1, le=16)
    max_points: int = Field(8, ge=1, le=64)  # cap on tracked points per clip
    min_sprite_size: float = Field(0.2, gt=0, le=1)  # sprite width, height: fraction of the shorter side
    max_sprite_size: float = Field(0.38, gt=0, le=1)
    min_speed: float = Field(1.0, ge=0)  # normal sprite speed, px/frame
    max_speed: float = Field(4.0, ge=0)
    fast_prob: float = Field(0.25, ge=0, le=1)  # chance that one sprite makes a fast burst
    min_fast_speed: float = Field(10.0, ge=0)  # displacement in the burst's fastest frame, px
    max_fast_speed: float = Field(18.0, ge=0)
    occlusion_prob: float = Field(0.35, ge=0, le=1)  # chance that a sprite passes over a tracked point
    leave_frame_prob: float = Field(0.15, ge=0, le=1)  # chance that one sprite's points leave the frame
    fast_threshold_px: float = Field(8.0, gt=0)  # "fast" label: a point moves more than this in a frame
    min_intensity: float = Field(0.5, ge=0, le=1)  # per-point "touch force", constant over the clip
    max_intensity: float = Field(1.0, ge=0, le=1)

    @field_validator("buckets")
    @classmethod
    def _parse_buckets(cls, names: list[str]) -> list[str]:
        for name in names:
            Bucket.parse(name)  # a ConfigError is a ValueError: build_config reports field and value
        return names

    @model_validator(mode="after")
    def _check_ranges(self) -> ProceduralConfig:
        for lo in ("sprites", "points_per_sprite", "sprite_size", "speed", "fast_speed", "intensity"):
            a, b = getattr(self, f"min_{lo}"), getattr(self, f"max_{lo}")
            if a > b:
                raise ValueError(f"min_{lo} = {a} is larger than max_{lo} = {b}")
        return self


@dataclass(frozen=True, eq=False)
class Sprite:
    """A textured ellipse; ``path[t]`` is where its texture pixel (0, 0) is at frame t (x, y)."""

    image: str
    texture: np.ndarray  # float32 (h, w, 3)
    mask: np.ndarray  # float32 (h, w): 1 inside the ellipse, 0 outside
    points: np.ndarray  # float64 (n, 2): tracked points, sprite-local (u, v)
    path: np.ndarray  # float64 (T, 2)


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything drawn for one clip; rendering and ground truth are pure functions of it."""

    bucket: Bucket
    background: np.ndarray  # float32 (H, W, 3), static
    sprites: tuple[Sprite, ...]  # back to front
    intensity: np.ndarray  # float32 (N,), points in sprite order
    params: dict[str, Any]  # the drawn parameters, JSON-serialisable


Look = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # image name, texture, mask, points: a Sprite sans path


@functools.cache
def load_image(name: str) -> np.ndarray:
    """One of scikit-image's bundled images as read-only uint8 RGB (gray expanded, alpha dropped)."""
    import skimage.data
    import skimage.io

    image = skimage.io.imread(os.path.join(os.path.dirname(skimage.data.__file__), name))
    image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
    image = np.ascontiguousarray(image, dtype=np.uint8)
    image.setflags(write=False)
    return image


def _crop(
    rng: np.random.Generator, image: np.ndarray, width: int, height: int, zoom: tuple[float, float]
) -> np.ndarray:
    """A random crop of ``zoom`` times (width, height) source pixels (as much as fits), resized to that."""
    ih, iw = image.shape[:2]
    z = min(rng.uniform(*zoom), iw / width, ih / height)
    cw, ch = max(1, min(iw, round(width * z))), max(1, min(ih, round(height * z)))
    x0, y0 = int(rng.integers(0, iw - cw + 1)), int(rng.integers(0, ih - ch + 1))
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    return cv2.resize(image[y0 : y0 + ch, x0 : x0 + cw], (width, height), interpolation=interp).astype(
        np.float32
    )


def _ellipse(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    r2 = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2) / (height / 2)) ** 2
    return (r2 <= 1).astype(np.float32)


def _pick_points(rng: np.random.Generator, texture: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """``n`` textured points away from the mask's edge: the best corners among random candidates."""
    h, w = mask.shape
    inner = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) >= max(3.0, 0.12 * min(w, h))
    cand = np.flatnonzero(inner)
    if cand.size == 0:
        cand = np.array([(h // 2) * w + w // 2])
    score = cv2.cornerMinEigenVal(texture.mean(axis=-1).astype(np.float32), blockSize=5, ksize=3)
    cand = rng.choice(cand, size=min(64, cand.size), replace=False)
    cand = cand[np.argsort(-score.flat[cand], kind="stable")]
    xy = np.stack([cand % w, cand // w], axis=-1).astype(np.float64)
    chosen: list[int] = []
    for i in range(len(xy)):  # greedy, spread out; fall back to the next best when too few are apart
        if all(np.hypot(*(xy[i] - xy[j])) >= 0.25 * min(w, h) for j in chosen):
            chosen.append(i)
    chosen += [i for i in range(len(xy)) if i not in chosen]
    return xy[chosen[:n]]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (h, w) at real (x, y), zero outside: exactly the alpha that rendering produces there."""
    h, w = image.shape
    padded = np.pad(image, 2)
    x, y = np.clip(x, -1.0, w), np.clip(y, -1.0, h)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    j, i = x0.astype(np.int64) + 2, y0.astype(np.int64) + 2
    top = padded[i, j] * (1 - fx) + padded[i, j + 1] * fx
    bottom = padded[i + 1, j] * (1 - fx) + padded[i + 1, j + 1] * fx
    return top * (1 - fy) + bottom * fy


def _wobble(rng: np.random.Generator, num_frames: int, axes: np.ndarray) -> np.ndarray:
    """A smooth sinusoidal (T, 2) offset starting at 0 whose speed never exceeds WOBBLE_SPEED."""
    span, t = num_frames - 1, np.arange(num_frames, dtype=np.float64)[:, None]
    freq, phase = rng.uniform(0.5, 2.0, size=2), rng.uniform(0, 2 * np.pi, size=2)
    amp = rng.uniform(0, WOBBLE_SPEED, size=2) * span / (2 * np.pi * freq) * axes
    return amp * (np.sin(2 * np.pi * freq * t / span + phase) - np.sin(phase))


def _burst(rng: np.random.Generator, num_frames: int, peak: float) -> np.ndarray:
    """Distance (T,) of a smooth burst whose largest per-frame step is exactly ``peak`` pixels."""
    length = min(int(rng.integers(3, 7)), num_frames - 1)
    start = int(rng.integers(0, num_frames - length))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip((np.arange(num_frames) - start) / length, 0, 1))
    return ramp * peak / np.diff(ramp).max()


def _fit(rng: np.random.Generator, offsets: np.ndarray, size: int, extent: int) -> float:
    """An origin keeping the sprite's box inside the frame along the path (centred when it cannot)."""
    lo, hi = -offsets.min(), extent - size - offsets.max()
    return float(rng.uniform(lo, hi)) if lo <= hi else float((lo + hi) / 2)


def _direction(d: np.ndarray) -> str:
    return DIRECTIONS[round(np.degrees(np.arctan2(d[1], d[0])) / 45) % 8]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _prompt(background: str, sprites: list[dict[str, Any]], occlusion: dict[str, Any] | None) -> str:
    names = [f"{IMAGES[s['image']]} patch" for s in sprites]
    nouns = [_a(n) for n in names]
    listed = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    glide = "glides" if len(names) == 1 else "glide"
    moves = []
    for name, s in zip(names, sprites, strict=True):
        if s["displacement_px"] < 2:
            moves.append(f"the {name} stays almost still")
            continue
        verb = "darts" if s["fast"] else "moves"
        moves.append(
            f"the {name} {verb} {s['direction']}" + (" and leaves the frame" if s["leaves_frame"] else "")
        )
    text = (
        f"{listed[0].upper()}{listed[1:]} {glide} over {_a(IMAGES[background])} texture; {', '.join(moves)}."
    )
    if occlusion is not None:
        text += f" The {names[occlusion['front']]} passes over the {names[occlusion['back']]}."
    return text


class ProceduralSource:
    """Yields procedural samples with exact tracks, visibility and occlusion / fast-motion labels."""

    def __init__(self, config: ProceduralConfig):
        self.config = config
        self.buckets = resolve_buckets(config.buckets)
        if config.max_sprites < 2 and config.occlusion_prob > 0:
            logger.warning(
                "occlusion_prob=%s is ignored: occlusion needs max_sprites >= 2", config.occlusion_prob
            )
        # clip i must not depend on num_clips, and neither may its provenance
        self._digest = config.model_copy(update={"num_clips": 1}).digest()

    def __len__(self) -> int:
        return self.config.num_clips

    def samples(self) -> Iterator[Sample]:
        for index in range(self.config.num_clips):
            yield self.make_clip(index)

    # -- the curation source protocol (ardrag.data.sources.VideoSource) ------------------------------
    name = "procedural"

    def setup(self) -> None:
        """Nothing to load: textures load lazily and are cached."""

    def settings_digest(self) -> str:
        """What the clips depend on besides their index (not ``num_clips``: adding clips adds inputs)."""
        return self._digest

    def inputs(self) -> list[SourceInput]:
        out = []
        for index in range(self.config.num_clips):
            key = f"proc-{self.config.seed:04d}-{index:06d}"
            digest = hashlib.sha256(f"{self._digest}:{index}".encode()).hexdigest()
            out.append(SourceInput(key, digest, "procedural", f"procedural clip {index}", {"index": index}))
        return out

    def clips(self, item: SourceInput) -> Iterator[Clip]:
        """One clip per input, with its ground truth (tracks, visibility, labels) attached."""
        s = self.make_clip(int(item.params["index"]))
        truth = {
            "tracks": s.tracks,
            "visible": s.visible,
            "intensity": s.intensity,
            "labels": s.extra["labels"],
        }
        yield Clip(s.key, item.id, s.video, s.fps, s.prompt, s.provenance.source, s.bucket, truth, {})

    def make_scene(self, index: int) -> Scene:
        """Draw every random choice of clip ``index``: bucket, textures, points, roles and paths."""
        c = self.config
        rng = np.random.default_rng(np.random.SeedSequence([c.seed, index]))
        bucket = self.buckets[int(rng.integers(len(self.buckets)))]
        n = int(rng.integers(c.min_sprites, c.max_sprites + 1))
        names = [list(IMAGES)[i] for i in rng.choice(len(IMAGES), size=n + 1, replace=False)]
        background = _crop(rng, load_image(names[0]), bucket.width, bucket.height, (0.55, 1.0))
        counts = rng.integers(c.min_points_per_sprite, c.max_points_per_sprite + 1, size=n)
        while counts.sum() > c.max_points:
            counts[np.argmax(counts)] -= 1
        short = min(bucket.width, bucket.height)
        looks = [self._look(rng, name, int(k), short) for name, k in zip(names[1:], counts, strict=True)]

        # roles: a fast sprite, an occluding pair (back a, front b), a sprite whose points leave the frame
        with_points = [i for i in range(n) if counts[i] > 0]
        fast = int(rng.choice(with_points)) if rng.random() < c.fast_prob else None
        backs = [i for i in with_points if i < n - 1]
        occ = None
        if backs and rng.random() < c.occlusion_prob:
            a = int(rng.choice(backs))
            occ = {"back": a, "front": int(rng.integers(a + 1, n)), "point": int(rng.integers(counts[a]))}
        leaving = None
        if rng.random() < c.leave_frame_prob:
            leaving = int(rng.choice([i for i in range(n) if occ is None or i != occ["front"]]))

        paths: list[np.ndarray] = []
        info: list[dict[str, Any]] = []
        exits: dict[int, tuple[int, int, int, float]] = {}
        for i, look in enumerate(looks):
            if i == leaving:
                exits[i] = self._exit(rng, look)
            d, meta = self._motion(rng, look, i == fast, exits.get(i))
            if i == leaving:
                axis, sign, t_exit, inner = exits[i]
                p0 = np.empty(2)
                edge = (bucket.width, bucket.height)[axis] - 0.5 + 1.0 if sign > 0 else -0.5 - 1.0
                p0[axis] = edge - d[t_exit, axis] - inner  # the innermost point is 1 px out at t_exit
                size, extent = look[2].shape[axis], (bucket.height, bucket.width)[axis]
                p0[1 - axis] = _fit(rng, d[:, 1 - axis], size, extent)
            elif occ is not None and i == occ["front"]:
                p0 = self._cover(rng, occ, looks, paths, d, exits.get(occ["back"]))
            else:
                p0 = self._place(rng, bucket, look, d, looks[:i], paths)
            paths.append(p0 + d)
            size = list(look[2].shape[::-1])
            info.append(
                {
                    "image": look[0],
                    "size": size,
                    **meta,
                    "leaves_frame": i == leaving,
                    "num_points": len(look[3]),
                }
            )
        for s, path in zip(info, paths, strict=True):
            s["displacement_px"] = float(np.hypot(*(path[-1] - path[0])))
            s["direction"] = _direction(path[-1] - path[0])
        sprites = tuple(Sprite(*look, path) for look, path in zip(looks, paths, strict=True))
        intensity = rng.uniform(c.min_intensity, c.max_intensity, size=int(counts.sum())).astype(np.float32)
        params = {
            "ground_truth": True,
            "index": index,
            "config_digest": self._digest,
            "bucket": bucket.name,
            "background": names[0],
            "sprites": info,
            "occlusion": occ,
            "leave_frame": leaving,
            "fast_sprite": fast,
        }
        return Scene(bucket, background, sprites, intensity, params)

    def _look(self, rng: np.random.Generator, name: str, count: int, short: int) -> Look:
        c = self.config
        w, h = (max(8, round(rng.uniform(c.min_sprite_size, c.max_sprite_size) * short)) for _ in "wh")
        crops = [_crop(rng, load_image(name), w, h, (0.8, 2.0)) for _ in range(3)]
        texture = max(crops, key=lambda a: float(a.std()))  # prefer the most textured crop
        mask = _ellipse(w, h)
        return name, texture, mask, _pick_points(rng, texture, mask, count)

    def _exit(self, rng: np.random.Generator, look: Look) -> tuple[int, int, int, float]:
        """Where a leaving sprite exits: axis (0 x, 1 y), side (+1 far edge), frame, innermost point."""
        h, w = look[2].shape
        axis, sign = int(rng.integers(2)), int(rng.choice([-1, 1]))
        t_exit = int(np.clip(round(rng.uniform(0.5, 0.85) * (self.config.num_frames - 1)), 1, None))
        ref = look[3][:, axis] if len(look[3]) else np.array([((w, h)[axis] - 1) / 2])
        return axis, sign, t_exit, float(ref.min() if sign > 0 else ref.max())

    def _motion(
        self, rng: np.random.Generator, look: Look, fast: bool, exit_: tuple[int, int, int, float] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Offsets (T, 2) of the sprite's origin from frame 0: straight line, wobble and a fast burst."""
        c, T = self.config, self.config.num_frames
        speed = float(rng.uniform(c.min_speed, c.max_speed))
        angle = float(rng.uniform(0, 2 * np.pi))
        wobble_axes = np.ones(2)
        if exit_ is not None:
            axis, sign, t_exit, _ = exit_
            tilt = float(rng.uniform(-np.pi / 6, np.pi / 6))
            spread = float(np.ptp(look[3][:, axis])) if len(look[3]) else 0.0
            # fast enough that every point is inside at frame 0 and 1 px outside at t_exit
            speed = max(speed, float((spread + 2.0) / (np.cos(tilt) * t_exit)))
            angle = axis * np.pi / 2 + (0.0 if sign > 0 else np.pi) + tilt
            wobble_axes[axis] = 0.0  # monotone along the exit axis: once out, the points stay out
        direction = np.array([np.cos(angle), np.sin(angle)])
        d = speed * direction * np.arange(T)[:, None] + _wobble(rng, T, wobble_axes)
        peak = float(rng.uniform(c.min_fast_speed, c.max_fast_speed)) if fast else 0.0
        if fast:
            d += _burst(rng, T, peak)[:, None] * direction
        return d, {
            "speed": speed,
            "direction_deg": float(np.degrees(angle)) % 360,
            "fast": fast,
            "burst_px": peak,
        }

    def _cover(
        self,
        rng: np.random.Generator,
        occ: dict,
        looks: list[Look],
        paths: list,
        d: np.ndarray,
        exit_: tuple | None,
    ) -> np.ndarray:
        """The front sprite's origin such that its centre passes within 0.3 radii of a back point."""
        a, b, span = occ["back"], occ["front"], self.config.num_frames - 1
        h, w = looks[b][2].shape
        t_occ = int(round(rng.uniform(0.35, 0.65) * span))
        if exit_ is not None:  # the back sprite leaves: cover its innermost point, the last to leave
            axis, sign, t_exit, _ = exit_
            t_occ = max(0, min(int(round(rng.uniform(0.15, 0.45) * span)), t_exit - 1))
            occ["point"] = int(np.argmin(sign * looks[a][3][:, axis]))
        occ["frame"] = t_occ
        target = paths[a][t_occ] + looks[a][3][occ["point"]] + rng.uniform(-0.3, 0.3, 2) * (w / 2, h / 2)
        return target - ((w - 1) / 2, (h - 1) / 2) - d[t_occ]

    def _place(
        self, rng: np.random.Generator, bucket: Bucket, look: Look, d: np.ndarray, behind: list, paths: list
    ) -> np.ndarray:
        """The sprite's origin at frame 0: inside the frame, covering as few points behind it as it can."""
        h, w = look[2].shape
        best, best_cost = np.zeros(2), np.inf
        for _ in range(8):
            p0 = np.array([_fit(rng, d[:, 0], w, bucket.width), _fit(rng, d[:, 1], h, bucket.height)])
            cost = 0
            for other, path in zip(behind, paths, strict=True):
                for u in other[3]:
                    xy = path + u - (p0 + d)
                    cost += int((_bilinear(look[2], xy[:, 0], xy[:, 1]) >= 0.5).sum())
            if cost < best_cost:
                best, best_cost = p0, cost
            if cost == 0:
                break
        return best

    def make_clip(self, index: int) -> Sample:
        """Clip ``index`` as a validated sample with content hashes."""
        c = self.config
        scene = self.make_scene(index)
        video = render(scene)
        tracks, visible = ground_truth(scene)
        steps = np.linalg.norm(np.diff(tracks, axis=0), axis=-1)
        max_speed = float(steps.max()) if steps.size else 0.0
        labels = {"occluded": bool((~visible).any()), "fast": max_speed > c.fast_threshold_px}
        params = {**scene.params, "labels": labels}
        sample = Sample(
            key=f"proc-{c.seed:04d}-{index:06d}",
            video=video,
            tracks=tracks,
            visible=visible,
            intensity=np.tile(scene.intensity, (c.num_frames, 1)),
            prompt=_prompt(params["background"], params["sprites"], params["occlusion"]),
            provenance=Provenance(source=SourceInfo(kind="procedural", params=params, seed=c.seed)),
            fps=c.fps,
            extra={
                "labels": labels,
                "occlusion_fraction": float((~visible).mean()),
                "max_speed_px": max_speed,
            },
        )
        logger.debug("procedural clip %s: %s, labels %s", sample.key, scene.bucket.name, labels)
        return sample.with_hashes()


def render(scene: Scene) -> np.ndarray:
    """The clip as uint8 (T, H, W, 3): sprites shifted sub-pixel and alpha-composited back to front."""
    H, W = scene.background.shape[:2]
    T = scene.sprites[0].path.shape[0]
    layers = []
    for s in scene.sprites:  # premultiplied RGBA with a zero border, so edges interpolate to clear
        rgba = np.concatenate([s.texture * s.mask[..., None], s.mask[..., None]], axis=-1)
        layers.append(np.pad(rgba, ((1, 1), (1, 1), (0, 0))))
    video = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        frame = scene.background.copy()
        for s, p in zip(scene.sprites, layers, strict=True):
            ix, iy = int(np.floor(s.path[t, 0])), int(np.floor(s.path[t, 1]))
            fx, fy = np.float32(s.path[t, 0] - ix), np.float32(s.path[t, 1] - iy)
            x0, x1, y0, y1 = max(ix, 0), min(ix + p.shape[1] - 1, W), max(iy, 0), min(iy + p.shape[0] - 1, H)
            if x0 >= x1 or y0 >= y1:
                continue
            # canvas pixel (i, j) sits at frame (iy + i, ix + j) and shows the sprite at (j - fx, i - fy)
            q = p[y0 - iy : y1 - iy + 1, x0 - ix : x1 - ix + 1]
            canvas = (1 - fy) * ((1 - fx) * q[1:, 1:] + fx * q[1:, :-1]) + fy * (
                (1 - fx) * q[:-1, 1:] + fx * q[:-1, :-1]
            )
            roi = frame[y0:y1, x0:x1]
            roi *= 1 - canvas[..., 3:]
            roi += canvas[..., :3]
        np.clip(np.rint(frame), 0, 255, out=frame)
        video[t] = frame
    return video


def point_truth(
    scene: Scene, t: int, xy: np.ndarray, margin_px: float = 4.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true path of any points (n, 2) seen at frame ``t``: float32 (T, n, 2), visibility (T, n), and
    which points are ambiguous (n,): within ``margin_px`` of a sprite's outline at frame t, where a
    tracker's window sees both sides and either answer is defensible.

    Each point belongs to the frontmost sprite that covers it at frame t (alpha at least 0.5), and moves
    with that sprite; a point on no sprite is background and stays. Visibility is as in
    :func:`ground_truth`: inside the frame and not behind a sprite drawn in front. This scores tracks of
    points other than the ones the generator placed (curation's own control points, say)."""
    H, W = scene.background.shape[:2]
    T = scene.sprites[0].path.shape[0]
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    tracks = np.repeat(pts[None], T, axis=0)
    visible = np.ones((T, len(pts)), bool)
    owner = np.full(len(pts), -1)
    ring = np.array([[0, 0], [margin_px, 0], [-margin_px, 0], [0, margin_px], [0, -margin_px]])
    ambiguous = np.zeros(len(pts), bool)
    for k, s in enumerate(scene.sprites):  # back to front: the last that covers a point owns it
        alpha = _bilinear(s.mask, pts[:, 0] - s.path[t, 0], pts[:, 1] - s.path[t, 1])
        owner[alpha >= 0.5] = k
        around = pts[:, None] + ring[None]
        inside = _bilinear(s.mask, around[..., 0] - s.path[t, 0], around[..., 1] - s.path[t, 1]) >= 0.5
        ambiguous |= inside.any(axis=1) & ~inside.all(axis=1)
    for n, k in enumerate(owner):
        if k >= 0:
            s = scene.sprites[k]
            tracks[:, n] = pts[n] + s.path - s.path[t]
        for front in scene.sprites[k + 1 :]:
            x, y = tracks[:, n, 0] - front.path[:, 0], tracks[:, n, 1] - front.path[:, 1]
            visible[:, n] &= _bilinear(front.mask, x, y) < 0.5
    x, y = tracks[..., 0], tracks[..., 1]
    inside = (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)
    return tracks.astype(np.float32), visible & inside, ambiguous


def follows_truth(
    scene: Scene, tracks: np.ndarray, visible: np.ndarray, tolerance_px: float = 3.0
) -> tuple[int, int]:
    """How many of the tracks (T, N, 2) follow the true path of the point each starts on (its first
    visible frame): the 95th percentile of the error over the frames where both see it at most
    ``tolerance_px``. Returns (following, scored); tracks that start on an outline are not scored."""
    following = scored = 0
    for i in range(tracks.shape[1]):
        t0 = int(np.argmax(visible[:, i]))
        truth, truth_visible, ambiguous = point_truth(scene, t0, tracks[t0, i][None])
        if ambiguous[0]:
            continue
        both = visible[:, i] & truth_visible[:, 0]
        error = np.linalg.norm(tracks[both, i] - truth[both, 0], axis=-1)
        scored += 1
        following += bool(len(error) and np.quantile(error, 0.95) <= tolerance_px)
    return following, scored


def ground_truth(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Tracks float32 (T, N, 2) and visibility bool (T, N), from the same geometry as :func:`render`."""
    H, W = scene.background.shape[:2]
    tracks, visible = [], []
    for k, s in enumerate(scene.sprites):
        for u in s.points:
            xy = s.path + u
            vis = (xy[:, 0] >= -0.5) & (xy[:, 0] <= W - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= H - 0.5)
            for front in scene.sprites[k + 1 :]:
                vis &= _bilinear(front.mask, xy[:, 0] - front.path[:, 0], xy[:, 1] - front.path[:, 1]) < 0.5
            tracks.append(xy)
            visible.append(vis)
    return np.stack(tracks, axis=1).astype(np.float32), np.stack(visible, axis=1)
