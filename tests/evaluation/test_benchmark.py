"""Benchmark lists (ardrag.evaluation.benchmark): what a list line becomes (an entry with paths beside the
list, or an EntryError with its line and reason), and the procedural set rendered into the list format
with its ground truth. Evaluating a list is tested in test_run.py."""

import json

import numpy as np
import pytest

from ardrag.data.codec import get_decoder
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.errors import ConfigError
from ardrag.evaluation.benchmark import (
    LIST_NAME,
    BenchmarkEntry,
    EntryError,
    clip_schedule,
    eval_set_config,
    load_benchmark,
    procedural_config,
    write_procedural_benchmark,
)
from ardrag.inference.trajectory import PromptSwitch, load_reference, load_trajectory, parse_trajectory

GOOD = {"id": "a", "reference": "a.png", "trajectory": "a.json", "prompt": "a kite"}


def write_list(folder, *lines):
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    (folder / LIST_NAME).write_text(text)
    return folder / LIST_NAME


def test_entries_resolve_paths_beside_the_list_and_skip_blanks_and_comments(tmp_path):
    listing = write_list(
        tmp_path / "bench",
        "# a comment",
        GOOD,
        "",
        {**GOOD, "id": "b", "reference_video": "clips/b.mp4"},
    )
    for where in (listing, listing.parent):  # the list or its folder
        a, b = load_benchmark(where)
        assert a == BenchmarkEntry("a", listing.parent / "a.png", listing.parent / "a.json", "a kite")
        assert b.id == "b" and b.reference_video == listing.parent / "clips" / "b.mp4"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "expected a JSON object, got list"),
        ({**GOOD, "video": "a.mp4"}, "unknown keys ['video']"),
        ({**GOOD, "prompt": "  "}, "'prompt' is '  '; expected a non-empty string"),
        ({k: v for k, v in GOOD.items() if k != "trajectory"}, "'trajectory' is None"),
        ({**GOOD, "reference_video": 3}, "'reference_video' is 3"),
        ({**GOOD, "id": "first"}, "id 'first' appears twice"),
        ("{not json", "not valid JSON"),
        ({**GOOD, "prompts": {"frame": 2}}, "line 3: prompts is {'frame': 2}; expected a list of switches"),
        ({**GOOD, "prompts": [{"frame": 2, "text": "b", "mode": "rebuild"}]},
         "line 3: prompts[0].mode is 'rebuild'; expected one of ['keep', 'recache']"),
        ({**GOOD, "prompts": [{"frame": -1, "text": "b"}]},
         "line 3: prompts[0].frame is -1; expected a pixel frame >= 0"),
        ({**GOOD, "prompts": [{"frame": 5, "text": "a"}, {"frame": 7, "text": "b"}]},
         "line 3: prompts[1].frame is 7 (latent frame 2), but prompts[0] at frame 5 holds latent frame 2 on"),
        ({**GOOD, "prompts": [{"frame": 2, "txt": "b"}]}, "prompts[0] has unknown key 'txt'"),
    ],
)  # fmt: skip
def test_a_bad_line_is_an_entry_error_with_its_line_and_the_rest_is_kept(tmp_path, line, reason):
    first = {**GOOD, "id": "first"}
    entries = load_benchmark(write_list(tmp_path, first, "# skipped", line, {**GOOD, "id": "last"}))
    assert [type(e) for e in entries] == [BenchmarkEntry, EntryError, BenchmarkEntry]
    error = entries[1]
    assert error.line == 3 and reason in error.reason
    assert error.id == (line["id"] if isinstance(line, dict) else "line-3")


def drag(frames, **extra):
    points = [{"x": [5.0] * frames, "y": [5.0] * frames}]
    return parse_trajectory({"width": 96, "height": 64, "points": points, **extra})


def test_an_entry_carries_a_schedule_checked_against_its_drag_when_the_clip_runs(tmp_path):
    """The entry's ``prompts`` become the clip's switches once the drag's length is known; a trajectory's
    own schedule is used when the entry has none; both at once, or a switch past the drag, is refused."""
    switches = [{"frame": 5, "text": "the kite dives", "mode": "keep"}]
    a, b = load_benchmark(write_list(tmp_path, {**GOOD, "prompts": switches}, {**GOOD, "id": "b"}))
    assert a.prompts == switches and a.line == 1 and b.prompts is None
    traj, origin = clip_schedule(a, drag(9))
    assert origin == "entry" and traj.prompts == (PromptSwitch(5, "the kite dives", "keep"),)
    assert traj.prompts[0].record() == {
        "frame": 5,
        "latent_frame": 2,
        "text": "the kite dives",
        "mode": "keep",
    }
    own = drag(9, prompts=[{"frame": 1, "text": "up"}])
    assert clip_schedule(b, own) == (own, "trajectory") and clip_schedule(b, drag(9))[1] is None
    with pytest.raises(
        ConfigError, match=r"line 1: prompts\[0\].frame is 5; expected a pixel frame in 0 .. 4"
    ):
        clip_schedule(a, drag(5))
    with pytest.raises(
        ConfigError, match="line 1: the entry has 'prompts' and so does its trajectory '.*a.json'"
    ):
        clip_schedule(a, own)


def test_a_missing_or_empty_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=f"{LIST_NAME}' does not exist"):
        load_benchmark(tmp_path)
    write_list(tmp_path, "# nothing but a comment")
    with pytest.raises(ConfigError, match="lists no clip"):
        load_benchmark(tmp_path)


def test_the_procedural_set_is_written_with_its_ground_truth(tmp_path):
    config = ProceduralConfig(num_clips=2, seed=3, num_frames=5, buckets=["320x192"])
    listing = write_procedural_benchmark(config, tmp_path / "bench")
    entries = load_benchmark(listing)
    samples = list(ProceduralSource(config).samples())
    assert [e.id for e in entries] == [s.key for s in samples]
    for entry, sample in zip(entries, samples, strict=True):
        assert entry.prompt == sample.prompt
        trajectory = load_trajectory(entry.trajectory)
        np.testing.assert_allclose(trajectory.tracks, sample.tracks, atol=1e-4)
        np.testing.assert_array_equal(trajectory.visible, sample.visible)
        np.testing.assert_array_equal(load_reference(entry.reference), sample.video[0])  # PNG: lossless
        video = get_decoder().decode(entry.reference_video.read_bytes())
        assert video.shape == sample.video.shape


def test_the_procedural_set_is_reused_for_the_same_config_and_redone_for_another(tmp_path):
    config = ProceduralConfig(num_clips=1, seed=3, num_frames=5, buckets=["320x192"])
    listing = write_procedural_benchmark(config, tmp_path)
    with listing.open("a") as f:
        f.write("# kept unless the list is written again\n")
    assert write_procedural_benchmark(config, tmp_path) == listing
    assert listing.read_text().endswith("# kept unless the list is written again\n")
    other = ProceduralConfig(num_clips=2, seed=4, num_frames=5, buckets=["320x192"])
    write_procedural_benchmark(other, tmp_path)
    assert "# kept" not in listing.read_text()
    assert [e.id for e in load_benchmark(listing)] == [s.key for s in ProceduralSource(other).samples()]


def test_the_default_procedural_set_is_the_datasets_definition(tmp_path):
    config = procedural_config()
    assert config.num_clips == 8 and config.seed == 9001
    with pytest.raises(ConfigError, match="does not exist"):
        procedural_config(tmp_path / "none.yaml")


def test_a_model_preset_names_its_evaluation_set(tmp_path):
    """The toy model's clips look like its training data, at its size, from a seed its recipe never drew;
    a preset without its own set gets the procedural one."""
    from ardrag.data.sources.toy import ToyConfig, ToySource
    from ardrag.presets import TOY

    assert eval_set_config("tiny") == eval_set_config(None) == procedural_config()
    toy = eval_set_config(TOY)
    assert isinstance(toy, ToyConfig) and toy.seed not in (0, 1)  # the recipe's training, held-out seeds
    assert (toy.size, toy.background, toy.sprite_texture, toy.num_frames) == ((48, 80), "flat", "smooth", 9)
    small = toy.model_copy(update={"num_clips": 2})
    entries = load_benchmark(write_procedural_benchmark(small, tmp_path))
    for entry, sample in zip(entries, ToySource(small).samples(), strict=True):
        image = load_reference(entry.reference)
        assert image.shape == (48, 80, 3) and np.array_equal(image, sample.video[0])
        assert (load_trajectory(entry.trajectory).width, load_trajectory(entry.trajectory).height) == (80, 48)
