"""What a person sees: ardrag's lines and errors on the console, the rest in the run's log file, and
progress bars only on a terminal (plain lines elsewhere). Each case runs in a process of its own, as a
command does (the console setup changes the root logger)."""

import subprocess
import sys
import textwrap

import pytest
from terminal import run_in_pty

from ardrag.console import Progress


def run_script(script: str, tmp_path, terminal: bool = False) -> str:
    """stderr and stdout of ``script`` run by this Python, through a pseudo-terminal when asked."""
    code = textwrap.dedent(script)
    if not terminal:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr
    return run_in_pty([sys.executable, "-c", code], cwd=tmp_path)


LOGGING = """
    import logging, warnings
    from ardrag import console
    console.setup(verbose={verbose})
    path = console.log_to_file(".", "check")
    import prefect  # configures logging on import: it must keep these handlers
    logging.getLogger("ardrag.training").info("ours: a stage line")
    logging.getLogger("ardrag.training").debug("ours: a debug line")
    logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/api "HTTP/1.1 201 Created"')
    logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
    logging.getLogger("transformers.utils").warning("a library warning")
    logging.getLogger("prefect.flow_runs").error("a library error")
    warnings.warn("a python warning")
    for line in console.closing_lines():
        print(line)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_console_shows_ardrag_lines_and_errors_and_the_log_file_has_everything(tmp_path, verbose):
    shown = run_script(LOGGING.format(verbose=verbose), tmp_path)
    (log,) = (tmp_path / "logs").glob("check-*.log")
    kept = log.read_text()
    for line in ("ours: a stage line", "HTTP Request: POST", "Finished in state Completed()",
                 "a library warning", "a library error", "a python warning"):  # fmt: skip
        assert line in kept
    assert "ours: a stage line" in shown and "a library error" in shown
    assert f"full log: {log}" in shown
    hidden = ("HTTP Request", "Finished in state", "a library warning", "a python warning", "a debug line")
    assert "ours: a debug line" in kept  # ardrag's debug lines are kept; libraries' are not logged
    if verbose:  # everything on the console too
        assert all(line in shown for line in hidden)
    else:
        assert not any(line in shown for line in hidden), shown
        assert "(2 library warnings in it)" in shown


def test_progress_off_a_terminal_writes_a_few_plain_lines(tmp_path):
    shown = run_script(
        """
        from ardrag import console
        console.setup()
        bar = console.Progress(total=8, desc="curating", unit="input")
        for i in range(8):
            bar.set_postfix({"loss": f"{1 / (i + 1):.3g}"})
            bar.update(1)
        bar.close()
        for _ in console.Progress(range(3), desc="disabled", enabled=False):
            pass
        """,
        tmp_path,
    )
    lines = [line.split(" ", 1)[1] for line in shown.splitlines()]
    assert lines == ["curating: 4/8 input (loss 0.25)", "curating: 8/8 input (loss 0.125)"]
    assert "\r" not in shown


def test_progress_on_a_terminal_draws_a_bar_on_stderr(tmp_path):
    shown = run_script(
        """
        import logging
        from ardrag import console
        console.setup()
        for i in console.Progress(range(5), desc="evaluating", unit="clip"):
            if i == 2:
                logging.getLogger("ardrag.evaluation").info("a line between updates")
        """,
        tmp_path,
        terminal=True,
    )
    assert "\r" in shown and "evaluating: 100%" in shown and "5/5" in shown
    assert "a line between updates" in shown
    assert "evaluating: 5/5 clip" not in shown  # the bar, not the plain lines


def test_progress_off_a_terminal_also_writes_a_line_when_minutes_pass(tmp_path):
    shown = run_script(
        """
        import time
        from ardrag import console
        console.setup()
        console.PLAIN_EVERY_S = 2.0  # 10 minutes in a real run
        bar = console.Progress(desc="streaming", unit="frame")  # no total: lines by time only
        bar.update(1)  # too soon: no line
        time.sleep(2.2)
        bar.update(1)  # the time has come
        bar.update(1)
        """,
        tmp_path,
    )
    assert [line.split(" ", 1)[1] for line in shown.splitlines()] == ["streaming: 2 frame"]


def test_progress_starts_at_initial_and_counts_its_iterable():
    bar = Progress(range(4), desc="x", enabled=False)
    assert bar.total == 4 and list(bar) == [0, 1, 2, 3] and bar.n == 4
    resumed = Progress(total=10, initial=6, desc="train", enabled=False)
    resumed.update(2)
    assert resumed.n == 8
