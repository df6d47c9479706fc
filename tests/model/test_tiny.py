"""The tiny and toy model presets built in memory: deterministic for a seed, the global RNG left alone,
the preset's sizes, and clear errors for names that are not built."""

import pytest
import torch

from ardrag.errors import ConfigError
from ardrag.model.tiny import (
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
    build_tiny_pipeline,
    tiny_transformer,
    tiny_vae,
    transformer_config,
)
from ardrag.presets import DEFAULT_MODEL, TINY, TOY


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_vae_is_deterministic_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    one, two, other = tiny_vae(seed=0), tiny_vae(seed=0), tiny_vae(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    weights = [dict(m.state_dict()) for m in (one, two, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert not one.training and one.dtype == torch.float32


def test_the_tiny_pipeline_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    one, two, other = build_tiny_pipeline(0), build_tiny_pipeline(0), build_tiny_pipeline(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("text_encoder", "image_encoder", "vae", "transformer"):
        assert _same(getattr(one, name), getattr(two, name)), name
        assert not _same(getattr(one, name), getattr(other, name)), name
    assert one.tokenizer("a kite").input_ids[-1] == one.tokenizer.eos_token_id
    assert {
        k: list(v) if isinstance(v, tuple) else v for k, v in one.vae.config.items() if k in TINY_VAE_CONFIG
    } == (TINY_VAE_CONFIG)


def test_the_toy_preset_widens_the_transformer_only():
    toy = build_tiny_pipeline(0, TOY)
    tiny = build_tiny_pipeline(0)
    cfg = toy.transformer.config
    assert (cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim, cfg.ffn_dim) == (4, 4, 32, 256)
    assert cfg.added_kv_proj_dim == cfg.num_attention_heads * cfg.attention_head_dim
    assert (cfg.in_channels, cfg.text_dim, cfg.image_dim) == (36, 32, 32)  # it reads the tiny encoders
    assert _same(toy.text_encoder, tiny.text_encoder) and _same(toy.vae, tiny.vae)
    assert sum(p.numel() for p in toy.transformer.parameters()) > 10 * sum(
        p.numel() for p in tiny.transformer.parameters()
    )


def test_a_transformer_alone_is_seeded_by_its_seed_and_takes_overrides():
    a, b = tiny_transformer(3, TOY), tiny_transformer(3, TOY)
    assert _same(a, b) and not _same(a, tiny_transformer(4, TOY))
    assert tiny_transformer(0, num_layers=3).config.num_layers == 3
    assert transformer_config() == TINY_TRANSFORMER_CONFIG
    assert transformer_config(TINY, num_layers=1)["num_layers"] == 1


def test_names_that_are_not_built_get_a_clear_error():
    with pytest.raises(ConfigError, match="is a pretrained model .* it is loaded, not built"):
        build_tiny_pipeline(0, DEFAULT_MODEL)
    with pytest.raises(ConfigError, match="preset 'huge' is unknown for model"):
        tiny_transformer(0, "huge")
