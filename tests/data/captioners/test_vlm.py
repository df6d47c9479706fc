"""The transformers captioner (ardrag.data.captioners.vlm): the tiny LLaVA preset in memory and
reloaded from a save_pretrained folder (the real from_pretrained path), the chat-template and plain
(BLIP) prompt paths, frame choice, one load under concurrent setup() calls, and the errors that name
the bad value. The registry and the contract every captioner keeps are in test_captioners.py."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ardrag.data.captioners import Captioner, get_captioner, save_tiny, vlm
from ardrag.errors import ConfigError


def clip(frames: int = 5, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """Random frames, each a different image (so the captioned frame is identifiable)."""
    return np.random.default_rng(seed).integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


class ProcessorSpy:
    """Wraps a loaded processor and records what each call passed (images and text)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def spy_on(captioner) -> ProcessorSpy:
    captioner.setup()
    spy = ProcessorSpy(captioner._processor)
    captioner._processor = spy
    return spy


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llava"), seed=0)


@pytest.fixture(scope="module")
def tiny():
    captioner = get_captioner("transformers", {"preset": "tiny", "max_new_tokens": 12})
    captioner.setup()
    return captioner


# -- the tiny preset ------------------------------------------------------------------------------------
def test_tiny_preset_captions_deterministically(tiny):
    assert isinstance(tiny, Captioner)
    video = clip()
    first = tiny.caption(video)
    assert isinstance(first, str) and first
    assert first == " ".join(first.split())  # one stripped line
    assert len(first.split()) == 12  # special tokens (EOS included) are suppressed: max_new_tokens words
    specials = set(tiny._processor.tokenizer.all_special_ids)
    assert len(specials) == 5 and specials <= set(tiny._model.generation_config.suppress_tokens)
    assert tiny.caption(video) == first
    fresh = get_captioner("transformers", {"preset": "tiny", "max_new_tokens": 12})
    assert fresh.caption(video) == first
    other_seed = get_captioner("transformers", {"preset": "tiny", "max_new_tokens": 12, "seed": 1})
    assert other_seed.caption(video) != first
    assert other_seed.version != tiny.version


def test_tiny_uses_the_chat_template_with_the_instruction(tiny):
    assert tiny.prompt_kind == "chat"
    captioner = get_captioner(
        "transformers", {"preset": "tiny", "max_new_tokens": 4, "instruction": "What moves here?"}
    )
    spy = spy_on(captioner)
    captioner.caption(clip())
    (call,) = spy.calls
    assert call["text"].startswith("USER: <image>\nWhat moves here?")
    assert call["text"].endswith("ASSISTANT:")


def test_saved_tiny_loads_from_its_folder_with_the_same_captions(tiny, tiny_folder):
    assert (tiny_folder / "config.json").is_file() and (tiny_folder / "chat_template.jinja").is_file()
    loaded = get_captioner("transformers", {"model": str(tiny_folder), "max_new_tokens": 12})
    assert loaded.version == str(tiny_folder)
    loaded.setup()
    assert type(loaded._model).__name__ == "LlavaForConditionalGeneration"
    assert loaded.prompt_kind == "chat"
    suppressed = tiny._model.generation_config.suppress_tokens
    assert loaded._model.generation_config.suppress_tokens == suppressed
    for seed in (0, 1):
        video = clip(seed=seed)
        assert loaded.caption(video) == tiny.caption(video)


@pytest.mark.parametrize("frames", ["first", "middle"])
def test_frames_picks_the_captioned_frame(frames):
    video = clip(frames=6)
    index = 0 if frames == "first" else 3
    captioner = get_captioner("transformers", {"preset": "tiny", "max_new_tokens": 8, "frames": frames})
    spy = spy_on(captioner)
    caption = captioner.caption(video)
    assert np.array_equal(np.asarray(spy.calls[0]["images"]), video[index])
    single = get_captioner("transformers", {"preset": "tiny", "max_new_tokens": 8})
    assert caption == single.caption(video[index : index + 1])


def test_setup_from_two_threads_loads_once(monkeypatch):
    loads = []
    real = vlm.load_model

    def counting_load(config):
        loads.append(config)
        time.sleep(0.3)  # both threads are inside setup() while the first load runs
        return real(config)

    monkeypatch.setattr(vlm, "load_model", counting_load)
    captioner = get_captioner("transformers", {"preset": "tiny", "max_new_tokens": 4})
    start = threading.Barrier(2)
    errors = []

    def run():
        try:
            start.wait()
            captioner.setup()
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(loads) == 1
    captioner.setup()
    assert len(loads) == 1
    assert captioner.caption(clip())


def test_pickles_without_the_model(tiny):
    clone = pickle.loads(pickle.dumps(tiny))
    assert clone._model is None and tiny._model is not None
    assert clone.caption(clip()) == tiny.caption(clip())


# -- the plain path: a processor without a chat template (BLIP) -------------------------------------------
def save_tiny_blip(folder: Path) -> Path:
    """A random-weight BLIP captioner and its processor (no chat template), saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor, PreTrainedTokenizerFast
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]", *"a dog cat ball runs rolls in park".split()]
    words = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="[DEC]",
    )
    processor = BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = BlipConfig(
        vision_config={**small, "image_size": 32, "patch_size": 8},
        text_config={
            **small,
            "vocab_size": len(tokens),
            "encoder_hidden_size": 32,
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "bos_token_id": 4,
            "eos_token_id": 3,
            "sep_token_id": 3,
        },
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).eval()
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def test_plain_captioner_gets_the_image_alone(tmp_path, caplog):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = save_tiny_blip(tmp_path / "blip")
    video = clip()
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    with torch.inference_mode():
        out = model.generate(
            **processor(images=video[0], return_tensors="pt"), max_new_tokens=6, do_sample=False
        )
    expected = " ".join(processor.decode(out[0], skip_special_tokens=True).split())

    captioner = get_captioner(
        "transformers", {"model": str(folder), "max_new_tokens": 6, "instruction": "Say what you see."}
    )
    with caplog.at_level("WARNING", logger=vlm.__name__):
        spy = spy_on(captioner)
    assert captioner.prompt_kind == "plain"
    assert "instruction is ignored" in caplog.text
    caption = captioner.caption(video)
    assert "text" not in spy.calls[0]
    assert caption == expected
    assert caption  # this seed's BLIP writes at least one word


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("video", "shown"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), "float32"),
        (np.zeros((8, 8, 3), np.uint8), "(8, 8, 3)"),
        (np.zeros((2, 8, 8, 4), np.uint8), "(2, 8, 8, 4)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "(0, 8, 8, 3)"),
        ([[0]], "[[0]]"),
    ],
)
def test_bad_video_names_the_value(video, shown, monkeypatch):
    monkeypatch.setattr(vlm, "load_model", lambda config: pytest.fail("validated after loading"))
    captioner = get_captioner("transformers", {"preset": "tiny"})
    with pytest.raises(ValueError, match="expected a uint8 RGB array") as err:
        captioner.caption(video)
    assert shown in str(err.value)


def test_missing_model_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    captioner = get_captioner("transformers", {"model": str(missing)})
    with pytest.raises(FileNotFoundError, match="save_pretrained") as err:
        captioner.setup()
    assert repr(str(missing)) in str(err.value)
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        get_captioner("transformers", {"model": str(a_file)}).setup()


def test_incomplete_folder_names_the_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match=f"model={str(tmp_path)!r}.*save_pretrained"):
        get_captioner("transformers", {"model": str(tmp_path)}).setup()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "set model .* or preset='tiny'"),
        ({"model": "a/b", "preset": "tiny"}, "set one of them"),
        ({"model": "  "}, "model = '  '"),
        ({"preset": "tiny", "device": "gpu"}, "device 'gpu'"),
        ({"preset": "tiny", "frames": "last"}, "frames = 'last'"),
        ({"preset": "tiny", "max_new_tokens": 0}, "max_new_tokens = 0"),
        ({"preset": "tiny", "temperature": 0.7}, "temperature"),
    ],
)
def test_bad_config_is_a_config_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        get_captioner("transformers", fields)
