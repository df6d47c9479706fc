"""Wan 2.1 I2V models at toy size with random weights, built in memory: the ``tiny`` and ``toy`` model
presets (:mod:`ardrag.presets`).

The same diffusers and transformers classes as the 14B pipeline (UMT5 text encoder, CLIP vision encoder,
Wan VAE and transformer, UniPC flow scheduler), small enough for tests and CPU runs, deterministic for a
seed and without touching the global RNG. The tokenizer is byte-level (every string tokenises; 259 ids)
and the CLIP image processor is configured in memory, so nothing comes from a hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ardrag.console import route_library_logs
from ardrag.errors import ConfigError
from ardrag.model import TEXT_TOKENS
from ardrag.presets import TINY, preset

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel

IMAGE_SIZE = 32  # the tiny CLIP encoder's input size

# The toy Wan 2.1 I2V transformer of the tiny preset (also the model tests' base); other random presets
# override fields of it.
TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 36,  # 16 noise + 16 image-condition latents + 4 mask channels
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 32,
    "added_kv_proj_dim": 24,  # the inner dim, as in the 14B model (5120)
    "rope_max_seq_len": 1024,
}

# The toy Wan 2.1 VAE: 8x spatial and 4x temporal compression, as the real one, at base width 8.
TINY_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 8,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}

# transformers.UMT5Config fields; the vocabulary is the tokenizer's
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "dropout_rate": 0.0,
}

TINY_IMAGE_ENCODER_CONFIG: dict[str, Any] = {  # transformers.CLIPVisionConfig fields
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,  # the pipeline reads hidden_states[-2]
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
}


def transformer_config(name: str = TINY, **overrides: Any) -> dict[str, Any]:
    """The Wan transformer config of random model preset ``name``, with ``overrides`` on top."""
    entry = preset("model", name)
    if "transformer" not in entry:
        raise ConfigError(
            f"model preset {name!r} is a pretrained model ({entry.get('hub_id')}); it is loaded, not built"
        )
    return {**TINY_TRANSFORMER_CONFIG, **entry["transformer"], **overrides}


def tiny_transformer(seed: int = 0, name: str = TINY, **overrides: Any) -> WanTransformer3DModel:
    """A random Wan transformer of model preset ``name`` (and ``overrides``), seeded by ``seed`` alone;
    leaves the global RNG untouched."""
    import torch

    route_library_logs()
    from diffusers import WanTransformer3DModel

    config = transformer_config(name, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(**config)


def build_tiny_pipeline(seed: int = 0, name: str = TINY, transformer: bool = True) -> WanImageToVideoPipeline:
    """A ``WanImageToVideoPipeline`` with random weights, built offline: the encoders and VAE of model
    preset ``name`` (the tiny ones unless it sets theirs) and its transformer (none without
    ``transformer``: a caller that builds the student itself, at a size where two copies cost).
    Deterministic for ``seed``; leaves the global RNG untouched."""
    import torch

    route_library_logs()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    transformer_fields = transformer_config(name)  # an unknown name fails before any weights are drawn
    entry = preset("model", name)  # a real-shape preset also sets the encoders' and the VAE's fields
    text_fields = {**TINY_TEXT_ENCODER_CONFIG, **entry.get("text_encoder", {})}
    image_fields = {**TINY_IMAGE_ENCODER_CONFIG, **entry.get("image_encoder", {})}
    vae_fields = entry["vae"] if "vae" in entry else TINY_VAE_CONFIG
    tokenizer = byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                **text_fields,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
            )
        )
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**image_fields))
        vae = AutoencoderKLWan(**vae_fields)
        base = WanTransformer3DModel(**transformer_fields) if transformer else None
    size = entry.get("image_size", IMAGE_SIZE)
    return assemble_pipeline(tokenizer, text_encoder, image_encoder, vae, base, image_size=size)


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """The tiny preset's Wan 2.1 VAE alone, random weights: deterministic for ``seed``, leaves the global
    RNG untouched, eval mode, float32."""
    import torch

    route_library_logs()
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**TINY_VAE_CONFIG)
    return vae.float().eval()  # .float(), not .to(dtype): the latter warns about fp32 modules


def assemble_pipeline(
    tokenizer: Any,
    text_encoder: Any,
    image_encoder: Any,
    vae: Any,
    transformer: Any,
    image_size: int | None = None,
    image_processor: Any = None,
) -> Any:
    """A Wan 2.1 I2V pipeline from built components, in eval mode (UMT5's dropout would otherwise make
    two runs with one seed differ), with the scheduler Wan's diffusers pipelines use. The CLIP
    preprocessing: ``image_processor`` (e.g. a loaded one), else :func:`clip_image_processor` at
    ``image_size``."""
    if (image_size is None) == (image_processor is None):
        raise ValueError("assemble_pipeline takes image_size or image_processor, exactly one")
    route_library_logs()
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    for module in (text_encoder, image_encoder, vae, transformer):
        if module is not None:
            module.eval()
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
        image_processor=image_processor or clip_image_processor(size=image_size),
        image_encoder=image_encoder,
        transformer=transformer,
    )


def byte_tokenizer() -> Any:
    """A byte-level tokenizer with UMT5's special ids (pad 0, eos 1, unk 2), no hub access needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=TEXT_TOKENS,
    )


def clip_image_processor_class() -> type:
    """CLIP preprocessing's class; the PIL backend, since transformers' default one needs torchvision."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers < 5 has only the PIL-based class, under the plain name
        from transformers import CLIPImageProcessor as Processor
    return Processor


def clip_image_processor(size: int) -> Any:
    """CLIP preprocessing at ``size`` (shortest edge, then a centre crop)."""
    crop = {"height": size, "width": size}
    return clip_image_processor_class()(size={"shortest_edge": size}, crop_size=crop)
