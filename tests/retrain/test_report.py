"""ardrag.retrain.report: ``report.md`` lists every stage with its status, key, summary, the weights it
started from, figures, notes and outputs; a run's losses are the means over its first and its last 10 %
of steps."""

import json

from ardrag.retrain.report import loss_figures, write_report


def test_the_report_lists_every_stage_with_its_status_and_figures(tmp_path):
    results = [
        {"stage": "curation", "status": "ran", "seconds": 12.34, "key": "k1", "summary": "4 inputs",
         "figures": {"inputs": 4, "states": {"accepted": 3, "rejected": 1}},
         "outputs": {"curation folder": "/c"}},
        {"stage": "annotation", "status": "skipped (off)", "summary": "2 clips wait",
         "note": "start Label Studio"},
        {"stage": "teacher", "status": "skipped", "key": "k2", "start": "the toy model's trained student",
         "figures": {"teacher/loss": {"first": 0.123456, "last": 0.0123456}, "steps": 2}},
        {"stage": "evaluation", "status": "blocked", "table": "| fid |\n| --- |\n| 1 |"},
    ]  # fmt: skip
    path = write_report(tmp_path, results, 90.0)
    assert path == tmp_path / "report.md"
    lines = path.read_text().splitlines()
    assert lines[:6] == [
        "# ardrag retrain report", "", f"Folder: `{tmp_path}`; wall time 1.5 min.", "",
        "| stage | status | seconds | key | summary |", "| --- | --- | ---: | --- | --- |",
    ]  # fmt: skip
    assert lines[6:10] == [
        "| curation | ran | 12.3 | `k1` | 4 inputs |",
        "| annotation | skipped (off) | 0.0 | `` | 2 clips wait |",
        "| teacher | skipped | 0.0 | `k2` |  |",
        "| evaluation | blocked | 0.0 | `` |  |",
    ]
    text = "\n".join(lines)
    for r in results:
        assert f"## {r['stage']} ({r['status']})" in lines
    assert "- inputs: 4\n- states: accepted 3, rejected 1\n- curation folder: `/c`" in text
    assert "## annotation (skipped (off))\n\nstart Label Studio\n" in text
    assert "## teacher (skipped)\n\nStarted from: the toy model's trained student.\n\n- teacher/loss" in text
    assert "- teacher/loss: first 10 % 0.1235, last 10 % 0.01235\n- steps: 2" in text
    assert text.endswith("## evaluation (blocked)\n\n\n| fid |\n| --- |\n| 1 |")


def test_loss_figures_are_the_means_of_the_first_and_last_tenth_of_steps(tmp_path):
    assert loss_figures(tmp_path) == {}  # no losses.jsonl: no figures
    rows = [{"step": s, "teacher/loss": float(s), "teacher/grad_norm": 9.0, "lr": 1e-4} for s in range(1, 21)]
    rows[5]["note"] = "text"  # not a number: not a figure
    rows[7]["lr"] = None
    (tmp_path / "losses.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert loss_figures(tmp_path) == {
        "lr": {"first": 1e-4, "last": 1e-4},
        "teacher/loss": {"first": 1.5, "last": 19.5},  # steps 1-2 and 19-20
    }
    short = tmp_path / "short"
    short.mkdir()
    (short / "losses.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": s}) for s in (1, 2, 3)))
    assert loss_figures(short) == {"loss": {"first": 1, "last": 3}}  # under ten steps: the first and last
