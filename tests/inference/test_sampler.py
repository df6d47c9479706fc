"""The student's one sampler (ardrag.inference.sampler) ties training to inference: a GRPO rollout, a
distillation rollout and a StreamSession given the same draws produce the same frames and caches, bit for
bit (CPU, float32); the noise in place of the reference is drawn once per frame."""

import numpy as np
import pytest
import torch
from inference_helpers import controls as drag

from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom, SelectiveNoise, training_sampler
from ardrag.inference.session import StreamOptions, StreamSession
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.vae import StreamingVaeDecoder
from ardrag.training.conditions import Conditions
from ardrag.training.config import GRPOConfig
from ardrag.training.distill import rollout as distill_rollout
from ardrag.training.grpo import selective_rollout

FRAMES = 3


@pytest.fixture(scope="module")
def pipe():
    pipe = ARDragPipeline.tiny()
    with torch.no_grad():  # trained-looking control weights, so that the controls matter
        torch.nn.init.normal_(pipe.transformer.control_embedding.weight, std=0.1)
    return pipe


def controls(k):
    return drag(k, speed=3.0)


def stream(pipe, reference, noise, options=None):
    """A session run with these draws: (its frames, its latents, the Conditions that training would
    see for the same inputs: the session's own prompt, reference and control encodings); by default on
    the reference path, which training's rollouts run."""
    options = StreamOptions.reference() if options is None else options
    session = StreamSession(pipe, reference, "a red square slides right", noise=noise, options=options)
    encoded, real = [], session.encoder.encode_next
    session.encoder.encode_next = lambda pixels: encoded.append(real(pixels)) or encoded[-1]
    frames, latents = [], []
    for k in range(FRAMES):
        frames.append(session.step(controls(k)))
        latents.append(session.latent)
    session.flush()
    control = torch.cat([pipe.normalize(encoded[0])[1:], *[pipe.normalize(e) for e in encoded[1:]]], 2)
    c = Conditions(
        latents=torch.zeros_like(control), control=control, ref_latent=session.ref_latent, clip=session.clip,
        text=session.text, text_neg=None, index=[0], keys=["session"],
    )  # fmt: skip
    return session, frames, torch.cat(latents, 2), c


def decode(pipe, latents):
    decoder, out = StreamingVaeDecoder(pipe.vae), []
    with torch.no_grad():
        for m in range(latents.shape[2]):
            pixels = decoder.decode_next(latents[:, :, m : m + 1])
            frames = ((pixels[0].permute(1, 2, 3, 0).float() + 1) * 127.5).round().clamp(0, 255)
            out.append(frames.to(torch.uint8).numpy())
    return out


def test_a_grpo_rollout_and_a_stream_session_with_the_same_draws_give_the_same_frames(pipe, reference):
    steps = torch.tensor([[-1, 1, 0]])  # the actions: transition 1 in frame 1, transition 0 in frame 2
    sampler = training_sampler(GRPOConfig().timesteps, pipe)  # what GRPOStage builds on this pipeline
    assert sampler == FrameSampler.from_config(pipe.config) and sampler.write_timestep == 0.0

    def draws(action=9, rows=1):
        return SelectiveNoise(SampleRandom([5] * rows), SampleRandom([action] * rows), steps.expand(rows, -1),
                              sampler.transitions)  # fmt: skip

    session, frames, latents, c = stream(pipe, reference, draws())
    window = session.caches[0].window
    rollout = selective_rollout(pipe.transformer, c, draws(), sampler=sampler, window=window)
    assert torch.equal(rollout.clean, latents)  # bit for bit
    for ours, theirs in zip(decode(pipe, rollout.clean), frames, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for layer in range(len(pipe.transformer.blocks)):  # the caches hold the same frames
        for a, b in zip(rollout.cache.read(layer), session.caches[0].read(layer), strict=True):
            assert torch.equal(a, b)
    # the actions are the sampler's re-noising draws: other action noise, other frames after frame 0
    _, other, _, _ = stream(pipe, reference, draws(action=10))
    np.testing.assert_array_equal(other[0], frames[0])
    assert not np.array_equal(other[2], frames[2])
    # the deployed fast path (ring cache in ring order, cached cross-attention) agrees up to the rounding
    # of float32 sums taken in another order
    _, _, fast, _ = stream(pipe, reference, draws(), options=StreamOptions())
    torch.testing.assert_close(fast, latents, rtol=0, atol=1e-5)
    # a row of a batched rollout (GRPO's shape) agrees up to float rounding: batched products round apart
    tripled = {
        k: torch.cat([getattr(c, k)] * 3) for k in ("latents", "control", "ref_latent", "clip", "text")
    }
    batch = Conditions(**{**c.__dict__, **tripled, "index": [0, 0, 0]})
    rows = selective_rollout(pipe.transformer, batch, draws(rows=3), sampler=sampler, window=window)
    for row in range(3):
        torch.testing.assert_close(rows.clean[row : row + 1], latents, rtol=0, atol=1e-5)


def test_self_rollout_caches_what_the_session_streams_and_self_forcing_its_exit_predictions(pipe, reference):
    session, _, latents, c = stream(pipe, reference, FrameNoise(SampleRandom([3])))
    window = session.caches[0].window
    kw = {"timesteps": list(pipe.config.timesteps), "frames": FRAMES, "window": window, "grad": False}
    full = distill_rollout(pipe.transformer, c, SampleRandom([3]), exit_step=1, mode="self_rollout", **kw)
    assert torch.equal(torch.cat(full.written, 2), latents)
    for layer in range(len(pipe.transformer.blocks)):
        for a, b in zip(full.cache.read(layer), session.caches[0].read(layer), strict=True):
            assert torch.equal(a, b)
    forced = distill_rollout(pipe.transformer, c, SampleRandom([3]), exit_step=1, mode="self_forcing", **kw)
    assert torch.equal(torch.cat(forced.written, 2), forced.video)  # the exit predictions were written
    assert torch.equal(forced.written[0], full.video[:, :, :1])  # frame 0 alike up to the exit step
    assert not torch.equal(forced.written[0], full.written[0])  # ... but not finished
    # the cache holds exactly the written frames' keys and values, written with the frames' own inputs
    cache, noise = pipe.transformer.new_cache(window), FrameNoise(SampleRandom([3]))
    with torch.no_grad():
        for m, frame in enumerate(forced.written):
            mask, cond, clip = noise.inputs(m, c.ref_latent, c.clip)
            noise.start(m, frame)
            noise.renoise(m, 0, frame)  # self_forcing at exit 1 draws one re-noising eps per frame
            x_in, control = torch.cat([frame, mask, cond], 1), c.control[:, :, m : m + 1]
            t = torch.tensor([0.0])
            pipe.transformer.forward_frame(x_in, t, c.text, cache, clip, control=control, write=True)
    for layer in range(len(pipe.transformer.blocks)):
        for a, b in zip(forced.cache.read(layer), cache.read(layer), strict=True):
            assert torch.equal(a, b)


def test_the_noise_in_place_of_the_reference_is_drawn_once_per_frame(pipe, reference):
    seen = []  # per transformer pass: (image condition channels, CLIP tokens, write)
    original = pipe.transformer.forward_frame

    def spy(x_in, t, text, cache, clip, control=None, write=False, **fast):
        seen.append((x_in[:, 20:].clone(), clip.clone(), write))
        return original(x_in, t, text, cache, clip, control=control, write=write, **fast)

    pipe.transformer.forward_frame = spy
    try:
        session, _, _, _ = stream(pipe, reference, FrameNoise(SampleRandom([4])))
    finally:
        pipe.transformer.forward_frame = original
    per_frame = [seen[4 * m : 4 * m + 4] for m in range(FRAMES)]  # 3 denoising passes and the write
    assert [[w for _, _, w in passes] for passes in per_frame] == [[False] * 3 + [True]] * FRAMES
    assert torch.equal(per_frame[0][0][0], session.ref_latent)
    for passes in per_frame:
        for cond, clip, _ in passes[1:]:
            assert torch.equal(cond, passes[0][0]) and torch.equal(clip, passes[0][1])
    assert not torch.equal(per_frame[1][0][0], per_frame[2][0][0])  # a new draw for each frame


def test_a_bf16_pipeline_streams(reference):
    pipe = ARDragPipeline.tiny()
    pipe.wan.to(torch.bfloat16)
    pipe.transformer.to(torch.bfloat16)
    session = StreamSession(pipe, reference, "a red square slides right")
    frames = [session.step(controls(k)) for k in range(2)]
    assert [f.shape[0] for f in frames] == [1, 4] and session.latent.dtype == torch.bfloat16


def test_the_ode_kind_is_the_flow_euler_step_and_schedules_are_checked():
    ode, renoise = FrameSampler((1000.0, 600.0, 300.0), kind="ode"), FrameSampler((1000.0, 600.0, 300.0))
    x, v, eps = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    for n in range(2):
        s, s_next = ode.level(n), ode.level(n + 1)
        x0 = ode.predict(x, v, n)
        torch.testing.assert_close(ode.next(x, x0, n, eps), x + (s_next - s) * v)
        torch.testing.assert_close(renoise.next(x, x0, n, eps), (1 - s_next) * x0 + s_next * eps)
        assert renoise.std(n) == s_next
    calls = []
    clean, exit_x0 = renoise.run(
        lambda x, n: calls.append(n) or x * 0.5,
        torch.ones(1),
        lambda n: torch.zeros(1),
        exit_step=1,
        stop_at_exit=True,
    )
    assert calls == [0, 1] and torch.equal(clean, exit_x0)
    for bad in [(), (500.0, 800.0), (1000.0, 0.0), (1200.0,)]:
        with pytest.raises(ConfigError, match="expected decreasing values in"):
            FrameSampler(bad)
    with pytest.raises(ConfigError, match="'renoise' or 'ode'"):
        FrameSampler((1000.0,), kind="sde")
