"""Planners: plans validated, schedules the CLI accepts, LM text parsed or refused with a reason, the
tiny LM loaded back through the llm planner's real from_pretrained path."""

import json
import subprocess
import sys

import pytest

from ardrag.errors import ConfigError
from ardrag.inference.trajectory import parse_prompts
from ardrag.planners import (
    PLANNERS,
    Plan,
    PlanRefused,
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
    with pytest.raises(ConfigError, match=r"unknown settings \['temperature'\]"):
        get_planner("llm", model="x", temperature=0.7)
    with pytest.raises(ConfigError, match=r"unknown settings \['model'\]"):
        get_planner("tiny", model="x")
    with pytest.raises(ConfigError, match="planner 'fixed'.*steps"):
        get_planner("fixed")


def test_importing_planners_loads_neither_torch_nor_transformers():
    code = "import sys, ardrag.planners; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
