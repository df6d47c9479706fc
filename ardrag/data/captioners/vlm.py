"""Captions from a vision-language model run through Hugging Face transformers.

``model`` is a hub id or a local folder holding a processor and a model saved with ``save_pretrained``;
they load with ``AutoProcessor`` and ``AutoModelForImageTextToText``. One frame of the clip is captioned
(``frames``: the first, which is the reference image the video model starts from, or the middle one).

Two prompt paths, chosen by the loaded processor:

- it has a chat template (instruction-tuned VLMs: LLaVA, Qwen2-VL, SmolVLM, ...): one user message
  holding the image and ``instruction`` is rendered with ``apply_chat_template(...,
  add_generation_prompt=True)`` and the processor gets the image and that text;
- it has none (plain captioners such as BLIP): the processor gets the image alone and the model writes
  an unconditioned caption; ``instruction`` is then unused (a warning says so when it was set).

Decoding is greedy (``do_sample=False``, one beam), so the same frame gives the same caption. Only the
new tokens are decoded (a decoder-only model echoes its prompt first), special tokens are skipped and
whitespace is collapsed to one line; "" means the model wrote nothing (the caller reads it as no prompt).

``preset`` (the tiny captioner preset of :mod:`ardrag.presets`) builds LLaVA (a 2-layer CLIP vision tower,
a 2-layer Llama, a word-level tokenizer and a chat template) with random weights in memory: offline,
seeded, well under a second on CPU, and it writes word salad. Its generation config suppresses every
special token (EOS included), so it always writes ``max_new_tokens`` vocabulary words and never an empty
caption. :func:`save_tiny` writes it with ``save_pretrained`` so tests load it through the same
``from_pretrained`` path as a real model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ardrag.config import Config
from ardrag.console import route_library_logs
from ardrag.errors import describe
from ardrag.presets import TINY, CaptionerPreset

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ardrag[models]' (transformers, tokenizers, safetensors)"
DEFAULT_INSTRUCTION = "Describe this video in one sentence: the main subject, what it does and the setting."
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # "name" or "owner/name"


class TransformersCaptionerConfig(Config):
    """Which vision-language model captions, what it is asked and where it runs."""

    model: str | None = None  # hub id or local folder (save_pretrained); required unless preset is set
    preset: CaptionerPreset = None  # a captioner preset (ardrag.presets): random-weight LLaVA built in memory
    instruction: str = Field(DEFAULT_INSTRUCTION, min_length=1)  # asked of chat-template models only
    frames: Literal["first", "middle"] = "first"  # which frame is captioned; "middle": frame T // 2
    max_new_tokens: int = Field(48, ge=1, le=512)
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = Field(0, ge=0, lt=2**63)  # seeds the tiny preset's random weights; unused with model

    @field_validator("model")
    @classmethod
    def _model(cls, model: str | None) -> str | None:
        if model is not None and not model.strip():
            raise ValueError("is empty; expected a hub id such as 'owner/name' or a local folder")
        return model

    @model_validator(mode="after")
    def _check(self) -> TransformersCaptionerConfig:
        if self.model is None and self.preset is None:
            raise ValueError(
                "no model: set model (a hub id or a local folder saved with save_pretrained) or "
                f"preset={TINY!r}"
            )
        if self.model is not None and self.preset is not None:
            raise ValueError(f"model={self.model!r} and preset={self.preset!r} are both set; set one of them")
        if not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device {self.device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
        return self


def _require_models() -> None:
    """Fail at construction, with the install hint, rather than in a worker after hours of queueing."""
    missing = [m for m in ("torch", "transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"the transformers captioner needs {', '.join(missing)}: {INSTALL_HINT}")


# -- the tiny preset ------------------------------------------------------------------------------------
TINY_IMAGE_SIZE = 32  # the vision tower's input; 8 px patches: 16 image tokens
TINY_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
TINY_WORDS = (
    "a an the this video in one sentence main subject what it does and setting of on at with to from "
    "person man woman child dog cat bird car ball hand arm head door water tree road street park room "
    "table field sky walks runs jumps rolls turns moves opens falls flies swims rides holds throws "
    "slowly quickly left right up down red blue green small large"
).split()
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{{ '\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny(seed: int = 0) -> tuple[Any, Any]:
    """The tiny preset's ``(processor, model)``: a ``LlavaProcessor`` and ``LlavaForConditionalGeneration``
    with random weights, built offline; deterministic for ``seed`` and leaves the global RNG untouched."""
    route_library_logs()
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    vocab = {token: i for i, token in enumerate((*TINY_SPECIALS, *TINY_WORDS))}
    pad, unk, bos, eos, image = (vocab[t] for t in TINY_SPECIALS)
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs; decode joins with " "
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    size = TINY_IMAGE_SIZE
    processor = LlavaProcessor(
        # the PIL backend: transformers' default image processors need torchvision
        image_processor=LlavaImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",  # drops CLIP's class token ...
        num_additional_image_tokens=1,  # ... which this counts: (32 / 8) ** 2 = 16 image tokens
        chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=size,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            pad_token_id=pad,
            bos_token_id=bos,
            eos_token_id=eos,
        ),
        image_token_index=image,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    # random weights end on EOS or on special tokens at random; suppressing them all makes every caption
    # max_new_tokens vocabulary words, never "" (saved with the model, so a reload behaves the same)
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, suppress_tokens=[pad, unk, bos, eos, image]
    )
    return processor, model


def save_tiny(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the tiny preset's processor and model to ``folder`` with ``save_pretrained``; pass the folder
    as ``model`` to load it the way a real checkpoint loads."""
    folder = Path(folder)
    processor, model = build_tiny(seed)
    folder.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


# -- loading --------------------------------------------------------------------------------------------
def load_model(config: TransformersCaptionerConfig) -> tuple[Any, Any]:
    """``(processor, model)`` for ``config``, the model in eval mode on its device and dtype."""
    import torch

    dtype = getattr(torch, config.dtype)
    if config.preset is not None:
        processor, model = build_tiny(config.seed)
        return processor, model.to(device=config.device, dtype=dtype)
    model_ref = str(config.model)
    source = model_ref
    path = Path(model_ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(
                f"model={model_ref!r} is a file; expected a folder written by save_pretrained "
                "(processor and model) or a hub id"
            )
        source = str(path)
    elif not _HUB_ID.match(model_ref):
        raise FileNotFoundError(
            f"model={model_ref!r}: no such folder; point model at a local folder written by save_pretrained "
            "(processor and model) or at a hub id such as 'owner/name'"
        )
    route_library_logs()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    except Exception as err:
        raise RuntimeError(
            f"cannot load model={model_ref!r} with AutoProcessor and AutoModelForImageTextToText "
            f"({type(err).__name__}: {err}); without network access, save the processor and model "
            "elsewhere with save_pretrained and point model at that folder"
        ) from err
    if getattr(processor, "image_processor", None) is None:
        raise RuntimeError(
            f"model={model_ref!r} loaded a {type(processor).__name__} without an image processor; "
            "expected a vision-language model's processor"
        )
    return processor, model.to(config.device).eval()


class TransformersCaptioner:
    """A vision-language model that captions one frame per clip; the model loads in :meth:`setup`."""

    name = "transformers"
    thread_safe = False  # generate() on one model from several threads at once is not supported

    def __init__(self, config: TransformersCaptionerConfig):
        _require_models()
        self.config = config
        if config.preset is not None:
            self.version = f"{config.preset}-llava@seed={config.seed}"
        else:
            self.version = str(config.model)
            if "seed" in config.model_fields_set:
                logger.warning("seed=%r is ignored: it only seeds a preset's random weights", config.seed)
        self._processor: Any = None
        self._model: Any = None
        self._chat = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # workers call setup() themselves
        return {**self.__dict__, "_processor": None, "_model": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load the processor and model once; threads that call it together wait for one load."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            processor, model = load_model(self.config)
            self._chat = bool(getattr(processor, "chat_template", None))
            if not self._chat and "instruction" in self.config.model_fields_set:
                logger.warning(
                    "instruction is ignored: model=%r has no chat template, so it captions the image alone",
                    self.config.model,
                )
            self._processor = processor
            self._model = model  # last: another thread reads a set _model as "loaded"
        logger.info(
            "captioner %s loaded on %s (%s prompt)", self.version, self.config.device, self.prompt_kind
        )

    @property
    def prompt_kind(self) -> str:
        """``"chat"`` (instruction through the chat template) or ``"plain"`` (image only); after setup."""
        return "chat" if self._chat else "plain"

    def caption(self, video: np.ndarray) -> str:
        """One line describing ``video`` (uint8 (T, H, W, 3) RGB) from its chosen frame; "" if none."""
        if (
            not isinstance(video, np.ndarray)
            or video.dtype != np.uint8
            or video.ndim != 4
            or video.shape[-1] != 3
            or min(video.shape[:3]) == 0
        ):
            raise ValueError(
                f"video is {describe(video)}; expected a uint8 RGB array of shape (T, H, W, 3), "
                "T, H and W > 0"
            )
        import torch
        from PIL import Image

        self.setup()
        index = 0 if self.config.frames == "first" else video.shape[0] // 2
        image = Image.fromarray(np.ascontiguousarray(video[index]))
        processor, model = self._processor, self._model
        if self._chat:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": self.config.instruction}],
                }
            ]
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = processor(images=image, text=prompt, return_tensors="pt")
        else:
            inputs = processor(images=image, return_tensors="pt")
        device, dtype = model.device, model.dtype
        inputs = {
            k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False, num_beams=1
            )
        tokens = out[0]
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None:  # a decoder-only model returns the prompt, then the new tokens
            n = prompt_ids.shape[1]
            if tokens.shape[0] >= n and torch.equal(tokens[:n], prompt_ids[0]):
                tokens = tokens[n:]
        tokenizer = getattr(processor, "tokenizer", processor)
        return " ".join(tokenizer.decode(tokens, skip_special_tokens=True).split())
