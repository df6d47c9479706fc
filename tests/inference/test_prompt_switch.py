"""A prompt switch while streaming (StreamSession.set_prompt), tiny preset: the frames before the switch
stay as they were, ``keep`` leaves the KV cache untouched, ``recache`` writes the frames in view again
under the new prompt."""

import numpy as np
import pytest
import torch
from inference_helpers import controls

from ardrag.errors import ConfigError
from ardrag.inference.session import StreamOptions, StreamSession

FIRST, SECOND = "a red square slides right", "a blue kite climbs, then dives"




def stream(pipe, reference, frames, switch=None, options=None, sink=0):
    """Frames of a session; ``switch`` = (latent frame n, prompt, mode) applied before frame n."""
    options = options or StreamOptions(attention_sink=sink)
    session = StreamSession(pipe, reference, FIRST, seed=3, options=options)
    out, latents = [], []
    for k in range(frames):
        if switch is not None and k == switch[0]:
            session.set_prompt(switch[1], switch[2])
        out.append(session.step(controls(k)))
        latents.append(session.latent)
    return session, out, latents


def kv(cache):
    """The cache's stored keys and values (the ring's raw keys, or the concatenated ones)."""
    keys = getattr(cache, "raw", cache.keys)
    return [(k.clone(), v.clone()) for k, v in zip(keys, cache.values, strict=True)]


@pytest.mark.parametrize("mode", ["keep", "recache"])
def test_a_switch_at_frame_n_leaves_the_frames_before_it_and_changes_those_after(pipe, reference, mode):
    _, plain, plain_latents = stream(pipe, reference, 6)
    _, switched, latents = stream(pipe, reference, 6, switch=(3, SECOND, mode))
    for k in range(3):
        np.testing.assert_array_equal(switched[k], plain[k])
        assert torch.equal(latents[k], plain_latents[k])
    for k in range(3, 6):
        assert not torch.equal(latents[k], plain_latents[k]), k


@pytest.mark.parametrize("options", [StreamOptions.reference(), StreamOptions()], ids=["reference", "fast"])
def test_keep_leaves_the_cache_untouched(pipe, reference, options):
    session, _, _ = stream(pipe, reference, 4, options=options)
    session.flush()
    before, written = kv(session.caches[0]), session.caches[0].frames_written
    session.set_prompt(SECOND, "keep")
    after = kv(session.caches[0])
    assert session.caches[0].frames_written == written
    assert all(
        torch.equal(a, b) for pa, pb in zip(before, after, strict=True) for a, b in zip(pa, pb, strict=True)
    )


@pytest.mark.parametrize("options", [StreamOptions.reference(), StreamOptions()], ids=["reference", "fast"])
def test_recache_writes_the_frames_in_view_again_under_the_new_prompt(pipe, reference, options):
    session, _, _ = stream(pipe, reference, 4, options=options)
    session.flush()
    before = kv(session.caches[0])
    # the same prompt: writing the same frames again in the same order gives the same cache, bit for bit
    session.set_prompt(FIRST, "recache")
    assert session.caches[0].frames_written == 4
    same = kv(session.caches[0])
    assert all(
        torch.equal(a, b) for pa, pb in zip(before, same, strict=True) for a, b in zip(pa, pb, strict=True)
    )
    # a new prompt: the first block's keys and values come before any cross-attention (unchanged); every
    # later block's are the new prompt's
    session.set_prompt(SECOND, "recache")
    new = kv(session.caches[0])
    assert torch.equal(new[0][0], before[0][0]) and torch.equal(new[0][1], before[0][1])
    assert all(not torch.equal(new[i][0], before[i][0]) for i in range(1, len(new)))


def test_recache_rewrites_only_the_window_and_the_sink(pipe, reference):
    """After 10 frames with a window of 7 and a sink of 1, the view is frames 0 and 3-9: a re-cache writes
    those 8 frames, and the stream goes on with a full window."""
    session, _, _ = stream(pipe, reference, 10, sink=1)
    session.flush()
    assert session.caches[0].cached() == [0, 3, 4, 5, 6, 7, 8, 9]
    session.set_prompt(SECOND, "recache")
    assert session.caches[0].frames_written == 8 and session.caches[0].cached_frames == 8
    frames = session.step(controls(10))
    assert frames.shape == (4, 64, 96, 3)


def test_the_fast_path_follows_the_reference_through_a_switch(pipe, reference):
    """Latents within 1e-5 (float32 reordering, as in test_fast_step), both modes."""
    for mode in ("keep", "recache"):
        _, _, ref = stream(pipe, reference, 6, switch=(3, SECOND, mode), options=StreamOptions.reference())
        _, _, fast = stream(pipe, reference, 6, switch=(3, SECOND, mode))
        for a, b in zip(ref, fast, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_bad_switches_are_refused(pipe, reference):
    session = StreamSession(pipe, reference, FIRST)
    with pytest.raises(
        ConfigError, match=r"prompt switch mode is 'rebuild'; expected one of \['keep', 'recache'\]"
    ):
        session.set_prompt(SECOND, "rebuild")
    with pytest.raises(ConfigError, match="the new prompt is '  '; expected a description"):
        session.set_prompt("  ")
    session.step(controls(0))
    session.set_prompt(SECOND)
    with pytest.raises(ConfigError, match="a prompt switch ends what can be regenerated"):
        session.regenerate(controls(0))
