"""Captioners: the registry (ardrag.data.captioners) and the contract of its ``Captioner`` protocol that
every captioner keeps, each run on a small config. The transformers captioner's own tests are in
test_vlm.py beside this one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ardrag.data.captioners import CAPTIONERS, CONFIGS, Captioner, get_captioner
from ardrag.errors import ConfigError

CONTRACT = {"transformers": {"preset": "tiny", "max_new_tokens": 6}}


@pytest.fixture(params=sorted(CAPTIONERS))
def any_captioner(request) -> tuple[str, Captioner]:
    return request.param, get_captioner(request.param, CONTRACT[request.param])


def video(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(3, 24, 32, 3), dtype=np.uint8)


def test_every_captioner_has_a_config_and_a_contract_config():
    assert set(CONFIGS) == set(CAPTIONERS) == set(CONTRACT)


def test_a_captioner_keeps_the_protocol_and_pickles_before_setup(any_captioner):
    name, captioner = any_captioner
    assert isinstance(captioner, Captioner)
    assert captioner.name == name and isinstance(captioner.version, str) and captioner.version
    assert isinstance(captioner.thread_safe, bool)
    clone = pickle.loads(pickle.dumps(captioner))  # to a worker, which calls setup() itself
    assert clone.version == captioner.version


def test_a_caption_is_one_stripped_line_and_repeats(any_captioner):
    _, captioner = any_captioner
    captioner.setup()
    captioner.setup()  # idempotent
    first = captioner.caption(video())
    assert isinstance(first, str) and first == " ".join(first.split())
    assert captioner.caption(video()) == first


def test_unknown_config_keys_fail_naming_the_captioner_and_the_key(any_captioner):
    name, _ = any_captioner
    with pytest.raises(ConfigError, match=rf"captioner {name!r}(.|\n)*beams = 3"):
        get_captioner(name, {**CONTRACT[name], "beams": 3})


def test_unknown_captioner_lists_the_known_names():
    with pytest.raises(ConfigError, match=r"'blip2' is unknown; expected one of \['transformers'\]"):
        get_captioner("blip2")
    assert sorted(CAPTIONERS) == ["transformers"]
