"""Planners: a global instruction and the clip length in, step prompts with frame spans out.

A :class:`Plan` is a tuple of :class:`StepPrompt` (pixel-frame spans ``[start, end)`` and a prompt),
validated: spans in increasing order, not overlapping, within the clip's frames, non-empty text, and each
step starting in a later latent frame than the one before (pixel frames 1-4, 5-8, ... share a latent
frame, and a prompt switch takes effect per latent frame). Contiguous coverage is not required: the
streamed video has no "no prompt", so in a gap the earlier step's prompt goes on, frames before the first
step follow ``--prompt``, and the last step's prompt runs to the end of the clip (``end`` is advisory).
:meth:`Plan.to_schedule` gives the switch list ``ardrag generate --prompt-schedule FILE`` reads (the
``prompts`` format of :mod:`ardrag.inference.trajectory`).

Planners (``PLANNERS``, :func:`get_planner`):

- ``fixed``: a given list of steps, validated like any plan.
- ``llm``: a causal LM through transformers (a hub id or a local folder), prompted for a JSON list of
  ``{"start", "end", "text"}``; greedy decoding in ``plan``, bounded ``max_new_tokens``. Its text is parsed
  (:func:`parse_plan`) and validated before use, or refused with a :class:`PlanRefused` that says what
  was wrong with it.
- ``tiny``: the ``llm`` planner over a random tiny Llama and a byte-level tokenizer built in memory
  (seeded, offline), for tests; :func:`save_tiny_lm` writes it to a folder the ``llm`` planner loads.

Planning groups (TempAct's planner-executor RL): ``planner.sample(instruction, num_frames, seed)`` gives a
:class:`PlanSample`, so P seeds give P plans of one instruction. The ``llm`` planner samples there
(``temperature``, nucleus ``top_p``; TempAct's 1.0 and 0.7 by default; no top-k), deterministic per seed
and leaving the global RNG untouched; ``fixed`` gives its one plan whatever the seed. A sample is never
an exception for a bad plan: a refused text is a sample with ``plan=None``, the refusal's ``reason`` and
``format_score`` 0.0 (a valid plan scores 1.0; TempAct's 0.5 for "too few steps" never arises, since a
plan of one step is valid here and the validation has no partial pass). :meth:`PlanSample.plan_or` gives
the plan or TempAct's fallback, the instruction as one step over the whole clip.

Planner credit: an LM sample keeps ``prompt_ids`` and ``answer_ids`` (1-D, CPU; the answer cut after its
first EOS, the EOS kept, so its log-prob covers the choice to stop) and ``old_logprob``, the mean per-token
log-prob of the answer. :meth:`LLMPlanner.answer_logprob` computes that mean with gradients, in one forward
pass over prompt and answer; ``old_logprob`` is the same function under no_grad (not the sampler's
incremental logits), so ``exp(new - old)``, GSPO's length-normalised sequence ratio, is exactly 1 before
an update. :attr:`LLMPlanner.lm` is the module for an optimizer and ``train()``/``eval()``; sampling runs
in eval mode (no dropout) and restores the mode it found.

transformers and torch are imported inside the LM code only: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ardrag.errors import ConfigError, describe
from ardrag.presets import TINY

if TYPE_CHECKING:
    import torch

MAX_NEW_TOKENS = 4096  # a bound on max_new_tokens: a plan is a short JSON list
_STEP_KEYS = ("start", "end", "text")


class PlanRefused(ConfigError):
    """An LM's text is not a valid plan; the message says what was wrong with it."""


def latent_frame(frame: int) -> int:
    """The latent frame holding pixel frame ``frame``: 0, then 1-4 -> 1, 5-8 -> 2, ... (where a prompt
    switch at ``frame`` takes effect: ``PromptSwitch.latent_frame``, training's schedules)."""
    return 0 if frame == 0 else (frame + 3) // 4


@dataclass(frozen=True)
class StepPrompt:
    """Generate under ``text`` over pixel frames ``[start, end)``."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Plan:
    """Validated steps of a clip of ``num_frames`` pixel frames (rules in the module docstring)."""

    steps: tuple[StepPrompt, ...]
    num_frames: int

    def __post_init__(self) -> None:
        check_num_frames(self.num_frames)
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ConfigError("the plan has no steps; expected at least one step prompt")
        n = self.num_frames
        for i, step in enumerate(self.steps):
            if not isinstance(step, StepPrompt):
                raise ConfigError(f"plan step {i} is {describe(step)}; expected a StepPrompt")
            for name in ("start", "end"):
                value = getattr(step, name)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(
                        f"plan step {i}: {name} is {describe(value)}; expected an integer frame"
                    )
            if not 0 <= step.start < n:
                raise ConfigError(
                    f"plan step {i}: start is {step.start}; expected a pixel frame in 0 .. {n - 1} "
                    f"(the clip's {n} frames)"
                )
            if not step.start < step.end <= n:
                raise ConfigError(
                    f"plan step {i}: end is {step.end} (start {step.start}); expected "
                    f"{step.start + 1} .. {n} (spans are [start, end), within the clip)"
                )
            if not isinstance(step.text, str) or not step.text.strip():
                raise ConfigError(
                    f"plan step {i}: text is {describe(step.text)}; expected a non-empty prompt"
                )
            if i:
                prev = self.steps[i - 1]
                if step.start < prev.end:
                    raise ConfigError(
                        f"plan step {i} starts at frame {step.start}, inside step {i - 1}'s span "
                        f"[{prev.start}, {prev.end}); expected spans in increasing order, not overlapping"
                    )
                if latent_frame(step.start) == latent_frame(prev.start):
                    raise ConfigError(
                        f"plan step {i} starts at frame {step.start}, in latent frame "
                        f"{latent_frame(step.start)} as step {i - 1} (frame {prev.start}); expected each "
                        "step to start in a later latent frame (pixel frames 1-4, 5-8, ... share one)"
                    )

    @classmethod
    def from_list(cls, value: Any, num_frames: int, source: str = "plan") -> Plan:
        """Steps given as ``[{"start": int, "end": int, "text": str}, ...]`` (or StepPrompts)."""
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source} is {describe(value)}; expected a list of step prompts")
        steps = []
        for i, item in enumerate(value):
            if isinstance(item, StepPrompt):
                steps.append(item)
                continue
            if not isinstance(item, dict):
                raise ConfigError(
                    f"{source}[{i}] is {describe(item)}; expected an object "
                    '{"start": 0, "end": n, "text": "..."}'
                )
            missing = [k for k in _STEP_KEYS if k not in item]
            unknown = [k for k in item if k not in _STEP_KEYS]
            if missing or unknown:
                raise ConfigError(
                    f"{source}[{i}] has keys {sorted(item)} (missing {missing}, unknown {unknown}); "
                    f"expected exactly {list(_STEP_KEYS)}"
                )
            steps.append(StepPrompt(item["start"], item["end"], item["text"]))
        try:
            return cls(tuple(steps), num_frames)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err

    def to_schedule(self, mode: str | None = None) -> list[dict[str, Any]]:
        """The ``prompts`` switch list of ``ardrag generate --prompt-schedule``; ``mode`` (``keep`` or
        ``recache``) on every switch if given, else the default (recache)."""
        extra = {} if mode is None else {"mode": mode}
        return [{"frame": s.start, "text": s.text, **extra} for s in self.steps]


def check_num_frames(num_frames: Any) -> int:
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ConfigError(f"num_frames is {describe(num_frames)}; expected a positive number of pixel frames")
    return num_frames


def _check_instruction(instruction: Any) -> str:
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError(f"instruction is {describe(instruction)}; expected a non-empty text")
    return instruction


@dataclass(frozen=True)
class PlanSample:
    """One plan of a planning group: the planner's raw answer, its plan or the refusal's reason, the
    format score (1.0 valid, 0.0 refused) and, from an LM, the ids and log-prob for planner credit."""

    text: str  # the LM's answer; for the fixed planner its steps as JSON ("" when they cannot be dumped)
    plan: Plan | None  # None when refused
    reason: str | None  # the PlanRefused message when refused
    format_score: float
    prompt_ids: torch.Tensor | None = None  # 1-D long, CPU; None for non-LM planners
    answer_ids: torch.Tensor | None = None  # up to and with the first EOS if one was generated
    old_logprob: float | None = None  # mean log-prob of answer_ids at sampling (LLMPlanner.answer_logprob)

    def plan_or(self, instruction: str, num_frames: int) -> Plan:
        """The plan, or when refused TempAct's fallback: ``instruction`` as one step over the clip."""
        check_num_frames(num_frames)
        if self.plan is None:
            return Plan((StepPrompt(0, num_frames, _check_instruction(instruction)),), num_frames)
        if self.plan.num_frames != num_frames:
            raise ConfigError(
                f"plan_or: num_frames is {num_frames}; the sample's plan is for {self.plan.num_frames} frames"
            )
        return self.plan


def _scored(text: str, make_plan: Any, **lm: Any) -> PlanSample:
    """A sample of ``make_plan()``'s plan (format 1.0), or of its refusal (plan None, format 0.0)."""
    try:
        plan = make_plan()
    except ConfigError as err:  # PlanRefused from an LM, a ConfigError from fixed steps
        return PlanSample(text=text, plan=None, reason=str(err), format_score=0.0, **lm)
    return PlanSample(text=text, plan=plan, reason=None, format_score=1.0, **lm)


class Planner(Protocol):
    def plan(self, instruction: str, num_frames: int) -> Plan: ...

    def sample(self, instruction: str, num_frames: int, seed: int) -> PlanSample: ...


# -- fixed ---------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class FixedPlanner:
    """The given steps, whatever the instruction (validated against each clip's length)."""

    steps: list[Any]

    def __post_init__(self) -> None:
        if not isinstance(self.steps, list | tuple) or not self.steps:
            raise ConfigError(f"fixed planner: steps is {describe(self.steps)}; expected a non-empty list")

    def plan(self, instruction: str, num_frames: int) -> Plan:
        _check_instruction(instruction)
        return Plan.from_list(list(self.steps), check_num_frames(num_frames), "fixed planner steps")

    def sample(self, instruction: str, num_frames: int, seed: int) -> PlanSample:
        """The fixed plan as a sample (``seed`` ignored); steps invalid for this clip are a refusal."""
        _check_instruction(instruction)
        check_num_frames(num_frames)
        steps = [dataclasses.asdict(s) if isinstance(s, StepPrompt) else s for s in self.steps]
        try:
            text = json.dumps(steps)
        except (TypeError, ValueError):  # steps that are not JSON are refused below with the reason
            text = ""
        return _scored(text, lambda: self.plan(instruction, num_frames))


# -- llm -----------------------------------------------------------------------------------------
def build_prompt(instruction: str, num_frames: int) -> str:
    """The planning request: a JSON list of span-aware step prompts covering the clip's frames."""
    n = num_frames
    half = max(1, n // 2)
    example = json.dumps(
        [{"start": 0, "end": half, "text": "..."}, {"start": half, "end": n, "text": "..."}]
        if n > 1
        else [{"start": 0, "end": 1, "text": "..."}]
    )
    return (
        f"You plan a video clip of {n} frames, numbered 0 to {n - 1}. Split the instruction into steps in "
        "time order and give each step a span of frames [start, end) and a prompt describing what the video "
        "shows during it. Answer with a JSON list only, of the form "
        f"{example}: spans in increasing order, not overlapping, 0 <= start < end <= {n}, together "
        f"covering the {n} frames, each text non-empty.\n"
        f"Instruction: {instruction.strip()}\n"
        "JSON:"
    )


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def parse_plan(text: str, num_frames: int) -> Plan:
    """The first JSON list in an LM's ``text``, validated as a plan; :class:`PlanRefused` otherwise."""
    check_num_frames(num_frames)
    if not isinstance(text, str) or not text.strip():
        raise PlanRefused(f"the LM's text is {describe(text)}; expected a JSON list of step prompts")
    decoder = json.JSONDecoder()
    found = None
    for i, char in enumerate(text):
        if char != "[":
            continue
        try:
            value, _ = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list):
            found = value
            break
    if found is None:
        raise PlanRefused(
            f"no JSON list found in the LM's text {_excerpt(text)}; expected "
            '[{"start": int, "end": int, "text": str}, ...]'
        )
    try:
        return Plan.from_list(found, num_frames, "the LM's plan")
    except ConfigError as err:
        raise PlanRefused(f"{err} (LM text {_excerpt(text)})") from err


def _check_sampling(name: str, value: Any, low: float, high: float | None) -> None:
    """``value`` a finite number in ``(low, high]`` (``(low, inf)`` when ``high`` is None)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > low and (high is None or value <= high)):
        bound = f"a number > {low}" if high is None else f"a number in ({low}, {high}]"
        raise ConfigError(
            f"llm planner: {name} is {describe(value)}; expected {bound} (sampling only: plan() is greedy)"
        )


@contextlib.contextmanager
def _seeded(device: str, seed: int) -> Iterator[None]:
    """Torch's RNG of the CPU and of ``device`` (if CUDA) seeded with ``seed`` inside, restored after."""
    import torch

    dev = torch.device(device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:  # this device only: torch.manual_seed would reseed every GPU
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@dataclass(kw_only=True)
class LLMPlanner:
    """A causal LM asked for the plan (:func:`build_prompt`): greedy in :meth:`plan`, sampled with
    ``temperature`` and ``top_p`` in :meth:`sample`; loaded in :meth:`setup`."""

    model: str  # a hub id or a local folder
    max_new_tokens: int = 256
    device: str = "cpu"
    temperature: float = 1.0  # of sample(); TempAct's planning groups use 1.0
    top_p: float = 0.7  # nucleus mass of sample(); TempAct's 0.7
    _lm: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"llm planner: model is {describe(self.model)}; expected a hub id or a folder")
        m = self.max_new_tokens
        if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= MAX_NEW_TOKENS:
            raise ConfigError(f"llm planner: max_new_tokens is {describe(m)}; expected 1 .. {MAX_NEW_TOKENS}")
        _check_sampling("temperature", self.temperature, 0.0, None)
        _check_sampling("top_p", self.top_p, 0.0, 1.0)

    def setup(self) -> None:
        """Load the LM and its tokenizer (``from_pretrained``), once."""
        if self._lm is not None:
            return
        from ardrag.console import route_library_logs

        route_library_logs()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.model).expanduser()
        looks_local = path.exists() or self.model.startswith((".", "/", "~"))
        if looks_local and not path.is_dir():
            raise ConfigError(
                f"llm planner: model {self.model!r} is not a folder; expected a saved causal LM folder "
                "or a hub id"
            )
        source = str(path) if looks_local else self.model
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            lm = AutoModelForCausalLM.from_pretrained(source)
        except OSError as err:
            raise ConfigError(
                f"llm planner: model {self.model!r} cannot be loaded ({err}); expected a causal LM folder "
                "or a hub id that is reachable or cached"
            ) from err
        self._use(lm, tokenizer)

    def _use(self, lm: Any, tokenizer: Any) -> None:
        self._lm = lm.to(self.device).eval()
        self._tokenizer = tokenizer

    @property
    def lm(self) -> Any:
        """The causal LM (loaded on first use), for an optimizer and ``train()``/``eval()``."""
        self.setup()
        return self._lm

    @property
    def tokenizer(self) -> Any:
        """The LM's tokenizer (loaded on first use), saved beside a trained LM."""
        self.setup()
        return self._tokenizer

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The LM's parameters (planner credit trains them)."""
        return self.lm.parameters()

    def _prompt_ids(self, instruction: str, num_frames: int) -> torch.Tensor:
        """The planning request tokenised (through the chat template if the tokenizer has one), (1, L)
        on the planner's device."""
        self.setup()
        prompt = build_prompt(_check_instruction(instruction), check_num_frames(num_frames))
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
                return_dict=True,
            )  # fmt: skip
            input_ids = ids["input_ids"]
        else:
            input_ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return input_ids.to(self.device)

    def _generate_ids(self, input_ids: torch.Tensor, **decoding: Any) -> torch.Tensor:
        """The new token ids (1-D) the LM generates after ``input_ids`` under ``decoding``."""
        import torch

        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = self._lm.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), num_beams=1,
                max_new_tokens=self.max_new_tokens, pad_token_id=pad, **decoding,
            )  # fmt: skip
        return out[0, input_ids.shape[1] :]

    def generate(self, instruction: str, num_frames: int) -> str:
        """The LM's raw answer to the planning request (new tokens only), greedy and deterministic."""
        new = self._generate_ids(self._prompt_ids(instruction, num_frames), do_sample=False)
        return self._tokenizer.decode(new, skip_special_tokens=True)

    def plan(self, instruction: str, num_frames: int) -> Plan:
        """The LM's plan, parsed and validated, or :class:`PlanRefused` saying what was wrong."""
        return parse_plan(self.generate(instruction, num_frames), num_frames)

    def _eos_ids(self) -> set[int]:
        """The ids that end generation: the tokenizer's EOS and the generation config's (one or a list)."""
        found: set[int] = set()
        config_eos = getattr(self._lm.generation_config, "eos_token_id", None)
        for value in (self._tokenizer.eos_token_id, config_eos):
            if isinstance(value, int):
                found.add(value)
            elif isinstance(value, list | tuple):
                found.update(value)
        return found

    def sample(self, instruction: str, num_frames: int, seed: int) -> PlanSample:
        """One sampled plan (``temperature``, ``top_p``, no top-k), the same for the same ``seed``; a
        refused text is a sample with format 0.0, not an exception. The global RNG is left as it was;
        the LM runs in eval mode and is put back in the mode it was in."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"llm planner: seed is {describe(seed)}; expected an integer")
        import torch

        prompt_ids = self._prompt_ids(instruction, num_frames)
        was_training = self._lm.training
        self._lm.eval()
        try:
            with _seeded(self.device, seed):
                new = self._generate_ids(
                    prompt_ids, do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p),
                    top_k=0,
                )  # fmt: skip
            eos = self._eos_ids()
            stops = [i for i, t in enumerate(new.tolist()) if t in eos]
            answer_ids = new[: stops[0] + 1] if stops else new  # cut after the first EOS, which stays
            prompt_ids, answer_ids = prompt_ids[0].cpu(), answer_ids.cpu()
            with torch.no_grad():
                old_logprob = float(self.answer_logprob(prompt_ids, answer_ids))
        finally:
            self._lm.train(was_training)
        text = self._tokenizer.decode(answer_ids, skip_special_tokens=True)
        return _scored(
            text, lambda: parse_plan(text, num_frames), prompt_ids=prompt_ids, answer_ids=answer_ids,
            old_logprob=old_logprob,
        )  # fmt: skip

    def answer_logprob(self, prompt_ids: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
        """The mean over ``answer_ids`` of log pi(token | prompt, earlier answer tokens): a scalar with
        gradients through the LM's parameters when grad is enabled, one forward pass over both. In the
        LM's current mode; :meth:`sample` records it in eval mode as ``old_logprob``."""
        import torch

        self.setup()
        for name, ids in (("prompt_ids", prompt_ids), ("answer_ids", answer_ids)):
            is_ids = isinstance(ids, torch.Tensor) and not ids.is_floating_point()
            if not (is_ids and ids.dim() == 1 and ids.numel()):
                raise ConfigError(f"answer_logprob: {name} is {describe(ids)}; expected non-empty 1-D ids")
        ids = torch.cat([prompt_ids, answer_ids]).long().to(self.device)[None]
        logits = self._lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        p, n = prompt_ids.numel(), answer_ids.numel()
        predicting = logits[0, p - 1 : p - 1 + n].float()  # position i predicts token i + 1
        return -torch.nn.functional.cross_entropy(predicting, ids[0, p:], reduction="mean")


# -- tiny ----------------------------------------------------------------------------------------
TINY_LM_CONFIG: dict[str, Any] = {  # transformers.LlamaConfig fields; the vocabulary is the tokenizer's
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


def tiny_lm(seed: int = 0) -> tuple[Any, Any]:
    """A random tiny Llama and the byte-level tokenizer of the tiny preset (``ardrag.model.tiny``),
    built offline; deterministic for ``seed``, leaves the global RNG untouched."""
    import torch

    from ardrag.console import route_library_logs

    route_library_logs()
    from transformers import LlamaConfig, LlamaForCausalLM

    from ardrag.model.tiny import byte_tokenizer

    tokenizer = byte_tokenizer()
    tokenizer.model_max_length = TINY_LM_CONFIG["max_position_embeddings"]
    config = LlamaConfig(
        vocab_size=len(tokenizer), **TINY_LM_CONFIG, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(config)
    return lm.eval(), tokenizer


def save_tiny_lm(folder: str | Path, seed: int = 0) -> Path:
    """:func:`tiny_lm` written with ``save_pretrained`` (model and tokenizer) to ``folder``, which the
    ``llm`` planner loads."""
    folder = Path(folder)
    lm, tokenizer = tiny_lm(seed)
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@dataclass(kw_only=True)
class TinyPlanner(LLMPlanner):
    """The ``llm`` planner over :func:`tiny_lm` (random weights: expect its plans to be refused)."""

    model: str = field(default=TINY, init=False)
    seed: int = 0
    max_new_tokens: int = 64

    def setup(self) -> None:
        if self._lm is None:
            self._use(*tiny_lm(self.seed))


PLANNERS: dict[str, type] = {"fixed": FixedPlanner, "llm": LLMPlanner, TINY: TinyPlanner}


def get_planner(name: str, **config: Any) -> Planner:
    """Planner ``name`` of ``PLANNERS`` built from ``config`` (its fields); LMs load on first use."""
    if name not in PLANNERS:
        raise ConfigError(f"planner {name!r} is unknown; expected one of {sorted(PLANNERS)}")
    cls = PLANNERS[name]
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ConfigError(f"planner {name!r}: unknown settings {unknown}; expected some of {fields}")
    try:
        return cls(**config)
    except TypeError as err:  # a required field left out
        raise ConfigError(f"planner {name!r}: {err}; its settings are {fields}") from err
