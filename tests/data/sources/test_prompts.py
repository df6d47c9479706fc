"""Prompt files beside the videos (ardrag.data.sources.prompts): formats, precedence, clear errors."""

import json

import pytest

from ardrag.data.sources.prompts import FolderPrompts, read_prompts_file
from ardrag.errors import ConfigError


def test_each_format_reads_to_the_same_table(tmp_path):
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"file": "a.mp4", "prompt": " a cat "}) + "\n\n", encoding="utf-8"
    )
    (tmp_path / "p.csv").write_text("prompt,file\n a cat ,a.mp4\n", encoding="utf-8")
    (tmp_path / "p.json").write_text(json.dumps({"a.mp4": "a cat"}), encoding="utf-8")
    (tmp_path / "p.yaml").write_text("a.mp4: a cat\n", encoding="utf-8")
    for name in ("p.jsonl", "p.csv", "p.json", "p.yaml"):
        assert read_prompts_file(tmp_path / name) == {"a.mp4": "a cat"}, name


def test_errors_name_the_file_the_line_and_what_was_expected(tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"file": "a.mp4", "prompt": "x"}\n{"video": "b.mp4"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"prompts.jsonl', line 2 .*\"file\" and \"prompt\""):
        read_prompts_file(bad)
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1: not JSON"):
        read_prompts_file(bad)
    csv = tmp_path / "prompts.csv"
    csv.write_text("name,text\na.mp4,x\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"columns \['name', 'text'\]; expected a header row with 'file' and 'prompt'"
    ):
        read_prompts_file(csv)
    with pytest.raises(ConfigError, match="file not found"):
        read_prompts_file(tmp_path / "missing.jsonl")


def test_sidecar_wins_then_relative_path_then_file_name(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "prompts.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"file": "v.mp4", "prompt": "by name"}, {"file": "d/v.mp4", "prompt": "by path"}]
        ),
        encoding="utf-8",
    )
    prompts = FolderPrompts(tmp_path)
    assert prompts.lookup("d/v.mp4")[0] == "by path"
    assert prompts.lookup("v.mp4")[0] == "by name"
    assert prompts.lookup("e/v.mp4")[0] == "by name"  # another folder, same file name
    (tmp_path / "d" / "v.txt").write_text("by sidecar", encoding="utf-8")
    text, info = prompts.lookup("d/v.mp4")
    assert (text, info.source, info.detail) == ("by sidecar", "sidecar", "d/v.txt")
    (tmp_path / "d" / "v.txt").write_text("   \n", encoding="utf-8")  # an empty sidecar says nothing
    assert prompts.lookup("d/v.mp4")[0] == "by path"
    assert prompts.unused(["d/v.mp4"]) == []
    assert prompts.unused(["x.mp4"]) == ["d/v.mp4", "v.mp4"]
