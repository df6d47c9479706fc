"""Planners: plans validated, schedules the CLI accepts, LM text parsed or refused with a reason, the
tiny LM loaded back through the llm planner's real from_pretrained path; planning groups (samples per
seed, format scores, the fallback) and the answer log-prob that planner credit trains."""

import json
import subprocess
import sys

import pytest

from ardrag.errors import ConfigError
from ardrag.inference.trajectory import parse_prompts
from ardrag.planners import (
    PLANNERS,
    FixedPlanner,
    Plan,
    PlanRefused,
    PlanSample,
    StepPrompt,
    build_prompt,
    get_planner,
    parse_plan,
    save_tiny_lm,
)

STEPS = [
    {"start": 0, "end": 12, "text": "a cat walks to the sofa"},
    {"start": 12, "end": 25, "text": "the cat jumps onto the sofa"},
    {"start": 29, "end": 33, "text": "the cat curls up"},  # a gap: frames 25-28 keep the jump's prompt
]


def test_fixed_planner_validates_and_gives_a_schedule_the_cli_accepts():
    plan = get_planner("fixed", steps=STEPS).plan("a cat settles on the sofa", 33)
    assert plan.steps[1] == StepPrompt(12, 25, "the cat jumps onto the sofa")
    schedule = plan.to_schedule()
    assert schedule[0] == {"frame": 0, "text": "a cat walks to the sofa"}
    switches = parse_prompts(schedule, 33, "plan")
    expected = [(s["start"], s["text"], "recache") for s in STEPS]
    assert [(s.frame, s.text, s.mode) for s in switches] == expected
    assert [s.mode for s in parse_prompts(plan.to_schedule("keep"), 33, "plan")] == ["keep"] * 3


@pytest.mark.parametrize(
    ("steps", "frames", "match"),
    [
        ([{"start": 0, "end": 34, "text": "x"}], 33, "end is 34"),
        ([{"start": 33, "end": 34, "text": "x"}], 33, "start is 33"),
        ([{"start": 5, "end": 5, "text": "x"}], 33, "end is 5"),
        ([{"start": 0, "end": 9, "text": "  "}], 33, "non-empty prompt"),
        ([{"start": 0, "end": 9, "text": "a"}, {"start": 8, "end": 12, "text": "b"}], 33, "not overlapping"),
        ([{"start": 9, "end": 12, "text": "a"}, {"start": 0, "end": 5, "text": "b"}], 33, "not overlapping"),
        ([{"start": 1, "end": 2, "text": "a"}, {"start": 2, "end": 4, "text": "b"}], 33, "later latent"),
        ([{"start": 0, "end": 9, "text": "a", "mode": "keep"}], 33, "unknown \\['mode'\\]"),
        ([{"start": 0.0, "end": 9, "text": "a"}], 33, "start is 0.0"),
    ],
)
def test_fixed_planner_refuses_bad_steps(steps, frames, match):
    with pytest.raises(ConfigError, match=match):
        get_planner("fixed", steps=steps).plan("go", frames)
    with pytest.raises(ConfigError, match="no steps"):
        Plan((), frames)
    with pytest.raises(ConfigError, match="expected a non-empty list"):
        get_planner("fixed", steps=[])


def test_parse_plan_reads_the_first_json_list_of_a_well_formed_text():
    text = "Sure! Here is the plan:\n```json\n" + json.dumps(STEPS) + "\n```\nThen [1, 2] is ignored."
    plan = parse_plan(text, 33)
    assert plan == Plan(tuple(StepPrompt(**s) for s in STEPS), 33)
    assert parse_prompts(plan.to_schedule(), 33, "plan")[2].frame == 29


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "expected a JSON list"),
        ("the cat jumps, then sits [not json", "no JSON list found"),
        ('{"start": 0, "end": 5, "text": "x"}', "no JSON list found"),
        ('[{"start": 0, "end": 20, "text": "a"}, {"start": 10, "end": 33, "text": "b"}]', "not overlapping"),
        ('[{"start": 0, "end": 40, "text": "a"}]', "end is 40"),
        ('[{"start": 0, "end": 9, "text": ""}]', "non-empty prompt"),
        ('[{"start": 0, "text": "a"}]', "missing \\['end'\\]"),
        ("[1, 2, 3]", "expected an object"),
        ("[]", "no steps"),
    ],
)
def test_parse_plan_refuses_bad_texts_with_a_reason(text, match):
    with pytest.raises(PlanRefused, match=match):
        parse_plan(text, 33)


def test_prompt_asks_for_a_json_list_over_the_clip():
    prompt = build_prompt("a cat jumps", 33)
    assert "33 frames" in prompt and '"start": 0' in prompt and "Instruction: a cat jumps" in prompt


def test_tiny_lm_saved_and_loaded_by_the_llm_planner_is_parsed_or_refused(tmp_path):
    folder = save_tiny_lm(tmp_path / "lm", seed=0)
    assert (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
    planner = get_planner("llm", model=str(folder), max_new_tokens=24)
    text = planner.generate("a cat jumps onto the sofa, then sits", 33)
    assert text == planner.generate("a cat jumps onto the sofa, then sits", 33)  # greedy: deterministic
    assert text == get_planner("tiny", max_new_tokens=24).generate("a cat jumps onto the sofa, then sits", 33)
    try:
        plan = planner.plan("a cat jumps onto the sofa, then sits", 33)
    except PlanRefused as err:
        assert str(err).strip()
    else:
        assert isinstance(plan, Plan) and parse_prompts(plan.to_schedule(), 33, "plan")


def test_llm_planner_refuses_a_missing_folder_and_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        get_planner("llm", model=str(tmp_path / "missing")).plan("go", 9)
    with pytest.raises(ConfigError, match="max_new_tokens is 0"):
        get_planner("llm", model=str(tmp_path), max_new_tokens=0)
    with pytest.raises(ConfigError, match="instruction is ''"):
        get_planner("tiny").plan("", 9)
    with pytest.raises(ConfigError, match="num_frames is 0"):
        get_planner("fixed", steps=STEPS).plan("go", 0)


def test_unknown_planner_names_and_settings_are_refused():
    with pytest.raises(ConfigError, match=r"'gpt' is unknown; expected one of \['fixed', 'llm', 'tiny'\]"):
        get_planner("gpt")
    assert sorted(PLANNERS) == ["fixed", "llm", "tiny"]
    with pytest.raises(ConfigError, match=r"unknown settings \['top_k'\]"):
        get_planner("llm", model="x", top_k=50)
    with pytest.raises(ConfigError, match=r"unknown settings \['model'\]"):
        get_planner("tiny", model="x")
    with pytest.raises(ConfigError, match="planner 'fixed'.*steps"):
        get_planner("fixed")


def test_importing_planners_loads_neither_torch_nor_transformers():
    code = "import sys, ardrag.planners; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


INSTRUCTION = "a cat jumps onto the sofa, then sits"
# The tiny LM's tokenizer is byte-level and the shortest valid plan has 32 bytes: 24 new tokens can never
# be a valid plan, so its samples are refusals whatever the seed.
SHORT = 24


def test_tiny_samples_are_deterministic_per_seed_vary_across_seeds_and_leave_the_global_rng():
    import torch

    planner = get_planner("tiny", max_new_tokens=SHORT)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = planner.sample(INSTRUCTION, 33, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    again = planner.sample(INSTRUCTION, 33, seed=1)
    assert first.text == again.text and torch.equal(first.answer_ids, again.answer_ids)
    assert first.old_logprob == again.old_logprob
    assert len({planner.sample(INSTRUCTION, 33, seed=s).text for s in range(4)}) > 1
    assert torch.equal(torch.get_rng_state(), state)
    for ids in (first.prompt_ids, first.answer_ids):
        assert ids.dim() == 1 and ids.dtype == torch.long and ids.device.type == "cpu"
    assert 1 <= first.answer_ids.numel() <= SHORT
    assert first.text == planner._tokenizer.decode(first.answer_ids, skip_special_tokens=True)
    eos = planner._tokenizer.eos_token_id
    assert eos not in first.answer_ids[:-1].tolist()  # cut at the first EOS, which stays if generated


def test_a_refused_sample_scores_zero_with_a_reason_and_falls_back_to_the_instruction():
    sample = get_planner("tiny", max_new_tokens=SHORT).sample(INSTRUCTION, 33, seed=0)
    assert sample.plan is None and sample.format_score == 0.0 and sample.reason
    fallback = Plan((StepPrompt(0, 33, INSTRUCTION),), 33)
    assert sample.plan_or(INSTRUCTION, 33) == fallback
    assert parse_prompts(fallback.to_schedule(), 33, "plan")[0].text == INSTRUCTION
    bad = get_planner("fixed", steps=STEPS).sample(INSTRUCTION, 9, seed=0)  # steps past the 9 frames
    assert bad.plan is None and bad.format_score == 0.0 and "end is 12" in bad.reason
    assert json.loads(bad.text) == STEPS
    assert bad.plan_or(INSTRUCTION, 9) == Plan((StepPrompt(0, 9, INSTRUCTION),), 9)


def test_fixed_planner_samples_its_plan_whatever_the_seed():
    planner = FixedPlanner(steps=STEPS)
    sample = planner.sample(INSTRUCTION, 33, seed=0)
    assert sample == planner.sample(INSTRUCTION, 33, seed=7)
    assert isinstance(sample, PlanSample) and sample.format_score == 1.0 and sample.reason is None
    assert sample.plan == planner.plan(INSTRUCTION, 33) and sample.plan_or(INSTRUCTION, 33) is sample.plan
    assert json.loads(sample.text) == STEPS
    assert sample.prompt_ids is None and sample.answer_ids is None and sample.old_logprob is None
    with pytest.raises(ConfigError, match="the sample's plan is for 33 frames"):
        sample.plan_or(INSTRUCTION, 9)
    with pytest.raises(ConfigError, match="instruction is ''"):
        planner.sample("", 33, seed=0)


def test_answer_logprob_matches_the_sample_and_one_step_up_its_gradient_raises_it():
    import torch

    planner = get_planner("tiny", max_new_tokens=SHORT, seed=3)
    sample = planner.sample(INSTRUCTION, 33, seed=5)
    with torch.no_grad():
        old = planner.answer_logprob(sample.prompt_ids, sample.answer_ids)
    assert old.item() == sample.old_logprob and torch.exp(old - sample.old_logprob).item() == 1.0
    # the same mean as transformers' own shifted loss over the answer tokens
    ids = torch.cat([sample.prompt_ids, sample.answer_ids])[None]
    labels = ids.clone()
    labels[0, : sample.prompt_ids.numel()] = -100
    with torch.no_grad():
        loss = planner.lm(input_ids=ids, labels=labels).loss
    assert torch.allclose(-loss, old, atol=1e-5)

    logprob = planner.answer_logprob(sample.prompt_ids, sample.answer_ids)
    assert logprob.dim() == 0 and logprob.grad_fn is not None
    optimizer = torch.optim.SGD(planner.parameters(), lr=1e-2)
    (-logprob).backward()
    optimizer.step()
    with torch.no_grad():
        assert planner.answer_logprob(sample.prompt_ids, sample.answer_ids).item() > sample.old_logprob

    planner.lm.train()
    assert planner.sample(INSTRUCTION, 33, seed=5).old_logprob is not None and planner.lm.training
    with pytest.raises(ConfigError, match="answer_ids is an array of dtype torch.int64 and shape \\(0,\\)"):
        planner.answer_logprob(sample.prompt_ids, sample.answer_ids[:0])


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("temperature", 0, "temperature is 0; expected a number > 0.0"),
        ("temperature", -1.0, "temperature is -1.0; expected a number > 0.0"),
        ("temperature", float("nan"), "temperature is nan"),
        ("temperature", True, "temperature is True"),
        ("temperature", "1", "temperature is '1'"),
        ("top_p", 0.0, "top_p is 0.0; expected a number in \\(0.0, 1.0\\]"),
        ("top_p", 1.5, "top_p is 1.5"),
        ("top_p", -0.1, "top_p is -0.1"),
    ],
)
def test_bad_sampling_settings_are_refused_naming_the_field_and_value(setting, value, match):
    with pytest.raises(ConfigError, match=match):
        get_planner("llm", model="x", **{setting: value})
    with pytest.raises(ConfigError, match=match):
        get_planner("tiny", **{setting: value})


def test_sampling_settings_are_accepted_and_a_bad_seed_is_refused():
    planner = get_planner("tiny", temperature=0.5, top_p=1, max_new_tokens=4)
    assert (planner.temperature, planner.top_p) == (0.5, 1)
    with pytest.raises(ConfigError, match="seed is '1'; expected an integer"):
        planner.sample(INSTRUCTION, 33, seed="1")
