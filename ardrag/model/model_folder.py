"""A whole trained model in one folder: its encoders, VAE and causal student, and how to generate with them.

The shipped toy model (``ardrag/assets/toy``, written by ``benchmarks/make_toy_model.py --ship``) is one.
Every weight is safetensors; each component is the folder its library's ``save_pretrained`` writes:

    recipe.json       "preset": the model preset it belongs to; "generation": the GenerationConfig it
                      generates with (resolution, timesteps, heatmap spots, guidance); and whatever the
                      writer records of how it was made (commands, seeds, commit, figures)
    transformer/      the CausalARDragTransformer (the student)
    vae/              AutoencoderKLWan
    text_encoder/     UMT5EncoderModel        tokenizer/        its tokenizer
    image_encoder/    CLIPVisionModel         image_processor/  its CLIP preprocessing

The encoders are saved even where they were drawn from a seed (the toy's tiny random encoders): the
transformer learnt their outputs, and a change in torch's initialisation would change a redraw.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ardrag.console import route_library_logs
from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write
from ardrag.model.device import load_dtype

if TYPE_CHECKING:
    from ardrag.model.pipeline import ARDragPipeline

log = logging.getLogger(__name__)

RECIPE = "recipe.json"
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model folder (it holds a ``recipe.json``), not a diffusers Wan folder."""
    return (Path(path) / RECIPE).is_file()


def folder_preset(path: str | os.PathLike[str]) -> str | None:
    """The model preset a model folder belongs to (its recipe's ``preset``); None for anything else."""
    return read_recipe(path).get("preset") if is_model_folder(path) else None


def read_recipe(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The folder's ``recipe.json``; a ConfigError naming the folder when it is missing or unreadable."""
    path = Path(folder) / RECIPE
    if not path.is_file():
        raise ConfigError(f"{str(folder)!r} is not a model folder: no {RECIPE} in it")
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err.msg}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("generation"), dict):
        raise ConfigError(f"{path} has no 'generation' mapping (the GenerationConfig the model needs)")
    return recipe


def save_model_folder(out: str | os.PathLike[str], pipe: ARDragPipeline, recipe: dict[str, Any]) -> Path:
    """Write ``pipe`` (its student, VAE, encoders and generation config) and ``recipe`` into ``out``:
    into ``<out>.tmp`` first, then renamed, so a killed write leaves the previous folder or none."""
    out = Path(out)
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    wan = pipe.wan
    parts = {"transformer": pipe.transformer, "vae": wan.vae, "text_encoder": wan.text_encoder,
             "tokenizer": wan.tokenizer, "image_encoder": wan.image_encoder,
             "image_processor": wan.image_processor}  # fmt: skip
    for name, part in parts.items():
        kwargs = {"safe_serialization": True} if hasattr(part, "parameters") else {}
        part.save_pretrained(str(tmp / name), **kwargs)
    recipe = {**recipe, "generation": pipe.config.model_dump()}
    atomic_write(tmp / RECIPE, json.dumps(recipe, indent=1) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def load_model_folder(
    folder: str | os.PathLike[str],
    checkpoint: str | None = None,
    torch_dtype: Any = None,
    *,
    device: Any = None,
    dtype: Any = None,
    **overrides: Any,
) -> ARDragPipeline:
    """The pipeline a model folder holds, generating with its recipe's config (``overrides`` on top);
    ``checkpoint``: another student (an ardrag export) in place of the folder's own. The Wan pipeline's
    transformer is the folder's student: a training run started from the folder starts from it
    (:func:`ardrag.training.run.build_models`). ``device``, ``dtype`` (``torch_dtype``: its older name):
    every component moved there (:meth:`ARDragPipeline.to`); both None: the CPU, as saved.

    A recipe without ``generation.buckets`` (written before the field existed, e.g. the shipped toy
    model's, trained at 80x48 only) renders at its width x height only, not at the default buckets."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel, PreTrainedTokenizerFast, UMT5EncoderModel

    from ardrag.model.pipeline import ARDragPipeline, GenerationConfig
    from ardrag.model.tiny import assemble_pipeline, clip_image_processor_class
    from ardrag.model.transformer_ardrag import CausalARDragTransformer

    route_library_logs()
    folder = Path(folder)
    recipe = read_recipe(folder)
    missing = [name for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise ConfigError(f"model folder {str(folder)!r} lacks {missing}; expected {list(COMPONENTS)}")
    dtype, load = load_dtype(torch_dtype, dtype, device)
    trained = CausalARDragTransformer.from_pretrained(str(folder / "transformer"), **load)
    processor = clip_image_processor_class().from_pretrained(str(folder / "image_processor"))
    wan = assemble_pipeline(
        PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer")),
        UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"), **load),
        CLIPVisionModel.from_pretrained(str(folder / "image_encoder"), **load),
        AutoencoderKLWan.from_pretrained(str(folder / "vae"), **load),
        trained,
        image_processor=processor,
    )
    student = trained
    if checkpoint is not None:
        student = CausalARDragTransformer.from_pretrained(checkpoint, **load)
    config = GenerationConfig(**{"buckets": None, **recipe["generation"], **overrides})
    log.debug("loaded model folder %s (preset %s)%s", folder, recipe.get("preset"),
              f" with the student of {checkpoint}" if checkpoint else "")  # fmt: skip
    pipe = ARDragPipeline(wan, student, config)
    return pipe.placed(device, dtype)
