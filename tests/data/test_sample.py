import numpy as np
import pytest
from factories import make_sample

from ardrag.data.sample import Provenance, Sample, SourceInfo, negative_prompt
from ardrag.errors import ConfigError, SampleValidationError


def _fields(s: Sample) -> dict:
    return dict(
        key=s.key,
        video=s.video,
        tracks=s.tracks,
        visible=s.visible,
        intensity=s.intensity,
        prompt=s.prompt,
        provenance=s.provenance,
    )


def test_valid_sample_defaults(sample):
    assert sample.bucket == "64x48"
    assert sample.fps == 16.0
    assert np.array_equal(sample.reference, sample.video[0])
    assert sample.num_points == 3 and sample.num_frames == 9
    assert set(sample.provenance.hashes) == {"video", "controls", "text"}
    assert sample.provenance.annotation.status == "auto"


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("key", "a/b", "no dots, no slashes"),
        ("key", "clip.1", "no dots, no slashes"),
        ("key", "", "no dots, no slashes"),
        ("key", "clip\n", "no dots, no slashes"),
        ("key", "k" * 87, "1-86 letters"),
        ("video", np.zeros((0, 48, 64, 3), np.uint8), "at least one frame"),
        ("video", np.zeros((9, 48, 64), np.uint8), "(T, H, W, 3)"),
        ("video", np.zeros((9, 48, 64, 3), np.float32), "uint8"),
        ("tracks", np.zeros((8, 3, 2), np.float32), "shape (9, N, 2)"),
        ("tracks", np.zeros((9, 3, 3), np.float32), "shape (9, N, 2)"),
        ("visible", np.ones((9, 2), bool), "shape (9, 3)"),
        ("intensity", np.full((9, 3), 1.5, np.float32), "values in [0, 1]"),
        ("intensity", np.full((9, 3), -0.1, np.float32), "values in [0, 1]"),
        ("prompt", None, "a string"),
    ],
)
def test_invalid_fields_name_the_field(sample, field, bad, message):
    kwargs = _fields(sample)
    kwargs[field] = bad
    with pytest.raises(SampleValidationError) as info:
        Sample(**kwargs)
    assert info.value.field == field
    assert f"field '{field}'" in str(info.value)
    assert message in str(info.value)


def test_nan_coordinates_are_rejected_with_their_position(sample):
    kwargs = _fields(sample)
    tracks = sample.tracks.copy()
    tracks[4, 2, 1] = np.nan
    kwargs["tracks"] = tracks
    with pytest.raises(SampleValidationError, match=r"field 'tracks'.*frame 4, point 2"):
        Sample(**kwargs)


def test_nan_intensity_is_rejected(sample):
    kwargs = _fields(sample)
    it = sample.intensity.copy()
    it[0, 0] = np.nan
    kwargs["intensity"] = it
    with pytest.raises(SampleValidationError, match="field 'intensity'"):
        Sample(**kwargs)


def test_bucket_must_match_video_size(sample):
    with pytest.raises(SampleValidationError, match="field 'bucket'.*'64x48'"):
        Sample(**_fields(sample), bucket="640x368")


def test_reference_shape_and_fps_checked(sample):
    with pytest.raises(SampleValidationError, match="field 'reference'"):
        Sample(**_fields(sample), reference=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(SampleValidationError, match="field 'fps'"):
        Sample(**_fields(sample), fps=0)


def test_zero_points_rejected(sample):
    kwargs = _fields(sample)
    kwargs.update(
        tracks=np.zeros((9, 0, 2), np.float32),
        visible=np.zeros((9, 0), bool),
        intensity=np.zeros((9, 0), np.float32),
    )
    with pytest.raises(SampleValidationError, match="at least one control point"):
        Sample(**kwargs)


def test_error_names_the_sample_key(sample):
    kwargs = _fields(sample)
    kwargs["intensity"] = np.full((9, 3), 2.0, np.float32)
    with pytest.raises(SampleValidationError, match="sample 'clip-000'"):
        Sample(**kwargs)


def test_content_hashes_change_with_content():
    a, b = make_sample(seed=0), make_sample(seed=1)
    assert a.provenance.hashes["video"] == b.provenance.hashes["video"]  # same frames
    assert a.provenance.hashes["controls"] != b.provenance.hashes["controls"]  # other points


def test_provenance_status_is_checked():
    with pytest.raises(ValueError):
        Provenance.model_validate({"source": {"kind": "x"}, "annotation": {"status": "maybe"}})
    assert SourceInfo(kind="procedural").params == {}


def test_shared_negative_prompt_template():
    text = negative_prompt("default")
    assert text.startswith("Overly vivid colors") and text.endswith("walking upside down.")
    with pytest.raises(ConfigError, match="not found"):
        negative_prompt("no-such-template")


def test_longest_key_fits_a_tar_member_name(tmp_path):
    from ardrag.data.sample import MAX_KEY_LENGTH
    from ardrag.data.shards import DatasetWriter, read_manifest

    with DatasetWriter(tmp_path) as w:
        w.write(make_sample("k" * MAX_KEY_LENGTH))
    assert read_manifest(tmp_path)["samples"] == 1


def test_coordinates_must_be_finite_in_float32(sample):
    kwargs = _fields(sample)
    tracks = sample.tracks.astype(np.float64)
    tracks[1, 0, 0] = 1e39  # finite in float64, inf in float32
    kwargs["tracks"] = tracks
    with pytest.raises(SampleValidationError, match="frame 1, point 0"):
        Sample(**kwargs)


def test_extra_must_serialise_and_numpy_fps_is_fine(sample):
    with pytest.raises(SampleValidationError, match="field 'extra'.*JSON-serialisable"):
        Sample(**_fields(sample), extra={"v": np.float32(1)})
    s = Sample(**_fields(sample), fps=np.float32(12.5))
    assert s.fps == 12.5 and type(s.fps) is float
    with pytest.raises(SampleValidationError, match="field 'fps'"):
        Sample(**_fields(sample), fps=True)
