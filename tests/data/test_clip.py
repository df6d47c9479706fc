"""What sources hand over (ardrag.data.clip): input ids safe as keys and keyed by content, the rejection
verdict, and a clip's checks of its key, video and bucket."""

import hashlib

import numpy as np
import pytest

from ardrag.data.clip import Clip, InputRejected, file_digest, safe_id
from ardrag.data.sample import KEY_PATTERN, SourceInfo
from ardrag.errors import SampleValidationError

DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("holiday clip.MOV", "holiday-clip-MOV-0123456789ab"),
        ("../café/été 2024!", "caf-t-2024-0123456789ab"),
        ("***", "input-0123456789ab"),
        ("x" * 60, "x" * 40 + "-0123456789ab"),
    ],
)
def test_safe_id_is_a_key_from_the_text_and_the_digest(text, expected):
    assert safe_id(text, DIGEST) == expected
    assert KEY_PATTERN.fullmatch(expected)


def test_file_digest_is_the_sha256_of_the_bytes_whatever_the_name(tmp_path):
    data = bytes(range(256)) * 10
    a, b = tmp_path / "a.mp4", tmp_path / "renamed.bin"
    a.write_bytes(data)
    b.write_bytes(data)
    assert file_digest(a) == file_digest(b) == hashlib.sha256(data).hexdigest()
    b.write_bytes(data[:-1])
    assert file_digest(b) != file_digest(a)


def test_input_rejected_keeps_the_reason_for_counting_and_the_detail_for_people():
    err = InputRejected("too-short", "5 frames, at least 17 needed")
    assert (err.reason, err.detail) == ("too-short", "5 frames, at least 17 needed")
    assert str(err) == "too-short: 5 frames, at least 17 needed"
    assert str(InputRejected("empty-file")) == "empty-file"


def clip(**fields) -> Clip:
    base = {
        "key": "in-c000",
        "input_id": "in",
        "video": np.zeros((3, 48, 64, 3), np.uint8),
        "fps": 16.0,
        "prompt": "a ball rolls",
        "source": SourceInfo(kind="procedural"),
    }
    return Clip(**{**base, **fields})


def test_a_clip_takes_its_bucket_from_the_video_and_refuses_another():
    assert clip().bucket == "64x48"
    assert clip(bucket="64x48").bucket == "64x48"
    with pytest.raises(SampleValidationError, match="field 'bucket' is '48x64'; expected '64x48'"):
        clip(bucket="48x64")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"key": "has space"}, "key"),
        ({"key": "k" * 87}, "key"),
        ({"video": np.zeros((3, 48, 64, 3), np.float32)}, "video"),
        ({"video": np.zeros((48, 64, 3), np.uint8)}, "video"),
        ({"video": np.zeros((3, 48, 64, 4), np.uint8)}, "video"),
        ({"video": np.zeros((0, 48, 64, 3), np.uint8)}, "video"),
    ],
)
def test_a_clip_with_a_bad_key_or_video_is_refused_naming_the_field(fields, field):
    with pytest.raises(SampleValidationError, match=f"field '{field}'") as err:
        clip(**fields)
    assert err.value.field == field
