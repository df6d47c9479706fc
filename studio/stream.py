"""One visitor's stream: a reference image, drags, a prompt, and the frames a :class:`StreamSession` made.

Work is split in two so that a drag never races a step. :meth:`StudioStream.plan_step` (and
:meth:`~StudioStream.plan_regenerate`) run where the page's messages are handled: they read the drags
for the frames of the next model step and move ``next_frame`` past them, so a drag made while that step
runs applies to the step after it. The returned :class:`Job` is the model work, run on the device's
queue; :meth:`StudioStream.finish` records what it made.

Everything a step used is recorded (controls, prompt switches, frames), so :meth:`trajectory` writes the
trajectory JSON of ``ardrag generate``, and the command in :meth:`replay_command` remakes the same frames
from it and :meth:`reference_png` with the same seed.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ardrag.data.buckets import Bucket, ResizeCrop
from ardrag.data.codec import encode_mp4
from ardrag.data.sample import DEFAULT_FPS
from ardrag.errors import ConfigError
from ardrag.inference.generate import render_size
from ardrag.inference.session import StreamSession
from ardrag.model.pipeline import ARDragPipeline
from studio.drags import Drags

MAX_PROMPT = 2000


def check_prompt(text: Any) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PROMPT:
        shown = str(text)[:60]
        raise ConfigError(f"prompt {shown!r}: expected a description of 1 to {MAX_PROMPT} characters")
    return text.strip()


def fit_image(pipe: ARDragPipeline, image: np.ndarray) -> tuple[ARDragPipeline, np.ndarray]:
    """The pipeline at the size ``ardrag generate`` would pick for ``image`` (the bucket nearest its
    aspect, or the model's one size) and the image fitted to it (scale to cover, centre crop)."""
    h, w = image.shape[:2]
    width, height, _ = render_size(pipe.config, w, h)
    fitted = ResizeCrop.fit(w, h, Bucket(width, height)).apply_frames(image[None])[0]
    return pipe.at_size(width, height), np.ascontiguousarray(fitted)


@dataclass
class Step:
    """The controls of one model step: pixel frames [start, end)."""

    latent: int
    start: int
    end: int
    tracks: np.ndarray
    visible: np.ndarray
    intensity: np.ndarray
    prompt: str | None = None  # a prompt switch applied before it


@dataclass
class Job:
    """Model work for the device queue: ``run()`` returns the step's frames, uint8 (n, H, W, 3)."""

    stream: StudioStream
    step: Step
    regenerate: bool = False

    def run(self) -> np.ndarray:
        s, step = self.stream, self.step
        try:
            if s.session is None:
                s.session = StreamSession(s.pipe, s.image, s.prompt, seed=s.seed)
            if step.prompt is not None and not self.regenerate:  # a regenerate starts after the switch
                s.session.set_prompt(step.prompt, "recache")
            controls = (step.tracks, step.visible, step.intensity)
            return s.session.regenerate(*controls) if self.regenerate else s.session.step(*controls)
        except BaseException as err:
            # a step that failed part way has moved the session's caches, encoders and noise: its
            # frames could no longer be replayed, so the stream ends here (the frames made so far stay)
            s.broken = f"{type(err).__name__}: {err}"
            s.session = None
            raise


@dataclass
class StudioStream:
    pipe: ARDragPipeline  # at the image's size
    image: np.ndarray  # uint8 (H, W, 3) at the pipeline's size
    prompt: str
    seed: int = 0
    max_frames: int = 2001
    session: StreamSession | None = None
    drags: Drags = field(init=False)
    next_frame: int = 0  # the first pixel frame whose controls no step has taken
    steps: list[Step] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 (H, W, 3) per pixel frame
    switches: list[tuple[int, str]] = field(default_factory=list)  # (pixel frame, prompt) after frame 0
    pending_prompt: str | None = None
    planned_prompt: str = ""  # the prompt of the last step planned (running or done)
    broken: str | None = None  # why a step failed; the stream then takes no more steps

    def __post_init__(self) -> None:
        self.drags = Drags(self.pipe.config.width, self.pipe.config.height)
        self.planned_prompt = self.prompt = check_prompt(self.prompt)

    @property
    def width(self) -> int:
        return self.pipe.config.width

    @property
    def height(self) -> int:
        return self.pipe.config.height

    @property
    def fps(self) -> float:
        return float(DEFAULT_FPS)

    @property
    def current_prompt(self) -> str:
        return self.pending_prompt if self.pending_prompt is not None else self.planned_prompt

    @property
    def full(self) -> bool:
        """No room for another step under ``max_frames``."""
        return (1 if self.next_frame == 0 else self.next_frame + 4) > self.max_frames

    def set_prompt(self, text: Any) -> None:
        """Before the first frame, the prompt to start with; after, a switch applied by the next step."""
        text = check_prompt(text)
        if self.next_frame == 0:
            self.prompt = self.planned_prompt = text  # the session starts with it (text encoded then)
            self.session = None
        else:  # back to the prompt of the step in flight (or done) cancels a pending switch
            self.pending_prompt = None if text == self.planned_prompt else text

    def _check_alive(self) -> None:
        if self.broken is not None:
            raise ConfigError(
                f"the stream stopped after a failed step ({self.broken}): reset to start again (the "
                "downloads hold the frames made before it)"
            )

    def plan_step(self) -> Job:
        self._check_alive()
        if self.full:
            raise ConfigError(
                f"the stream has its maximum of {self.max_frames} frames: download it, or reset to start "
                "again"
            )
        start = self.next_frame
        end = 1 if start == 0 else start + 4
        prompt, self.pending_prompt = self.pending_prompt, None
        if prompt is not None:
            self.planned_prompt = prompt
        step = Step(len(self.steps), start, end, *self.drags.controls(start, end), prompt=prompt)
        self.next_frame = end
        return Job(self, step)

    def plan_regenerate(self) -> Job:
        """The last step again, with the drags changed since it was taken applied to its frames."""
        self._check_alive()
        if not self.steps or self.next_frame != self.steps[-1].end:
            raise ConfigError("nothing to regenerate: generate a frame first")
        last = self.steps[-1]
        self.drags.move_anchors(last.end, last.start)
        step = Step(last.latent, last.start, last.end, *self.drags.controls(last.start, last.end),
                    prompt=last.prompt)  # fmt: skip
        return Job(self, step, regenerate=True)

    def finish(self, job: Job, frames: np.ndarray) -> None:
        """Record a job's frames (a regenerate replaces the last step's)."""
        step = job.step
        if job.regenerate:
            self.steps[-1] = step
            del self.frames[step.start :]
        else:
            self.steps.append(step)
            if step.prompt is not None:
                self.switches.append((step.start, step.prompt))
        self.frames.extend(frames)

    def abandon(self, job: Job) -> None:
        """A planned step that failed (the stream is ``broken``): ``next_frame`` is the frames made."""
        self.next_frame = len(self.frames)

    def frozen(self) -> StudioStream:
        """A copy of the record as it is now, for downloads made in another thread while steps go on."""
        out = copy.copy(self)
        out.steps, out.frames, out.switches = list(self.steps), list(self.frames), list(self.switches)
        return out

    # -- downloads ----------------------------------------------------------------------------------

    def trajectory(self) -> dict[str, Any]:
        """The trajectory JSON of ``ardrag generate`` for the frames made (every point's column padded
        as hidden where it did not exist yet), with the prompts: the first at frame 0, then each switch."""
        if not self.steps:
            raise ConfigError("nothing generated yet: press play or step first")
        n = max(s.tracks.shape[1] for s in self.steps)
        tracks, visible, intensity = [], [], []
        for s in self.steps:
            pad = n - s.tracks.shape[1]
            tracks.append(np.concatenate([s.tracks, np.zeros((len(s.tracks), pad, 2), np.float32)], 1))
            visible.append(np.concatenate([s.visible, np.zeros((len(s.visible), pad), bool)], 1))
            intensity.append(np.concatenate([s.intensity, np.ones((len(s.intensity), pad), np.float32)], 1))
        t, v, i = np.concatenate(tracks), np.concatenate(visible), np.concatenate(intensity)
        points = [
            {"x": t[:, j, 0].tolist(), "y": t[:, j, 1].tolist(), "visible": v[:, j].tolist(),
             "intensity": i[:, j].tolist()}
            for j in range(n)
        ]  # fmt: skip
        prompts = [{"frame": 0, "text": self.prompt, "mode": "recache"}]
        prompts += [{"frame": f, "text": text, "mode": "recache"} for f, text in self.switches]
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "points": points,
            "prompts": prompts,
        }

    def video(self) -> np.ndarray:
        if not self.frames:
            raise ConfigError("nothing generated yet: press play or step first")
        return np.stack(self.frames)

    def mp4(self) -> bytes:
        return encode_mp4(self.video(), self.fps)

    def reference_png(self) -> bytes:
        return png(self.image)

    def replay_command(self, model_args: str) -> str:
        """The command that remakes the frames from the downloads (the trajectory's prompts replace
        ``--prompt``)."""
        return (
            f"ardrag generate {model_args} --ref reference.png --traj trajectory.json "
            f"--prompt {shlex.quote(self.prompt)} --seed {self.seed} --out replay.mp4"
        )


def png(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ConfigError("an image could not be encoded as PNG")
    return data.tobytes()
