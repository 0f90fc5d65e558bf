"""The console: progress as a bar on a terminal and as plain lines elsewhere, the stage summary
lines and table, and the filter that keeps kfp.local's own output out of `rlhf run`."""

from __future__ import annotations

import io

import pytest

from rlhf.console import progress as progress_module
from rlhf.console.kfp_output import TaskOutput
from rlhf.console.progress import (
    EVENTS_ENV,
    PROGRESS_ENV,
    Progress,
    format_duration,
    parse_event,
)
from rlhf.console.stage_report import StageRecord, render_headlines, summary_line, summary_table
from rlhf.stages.specs import STAGES


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """A fake time.monotonic for the progress module: set ``clock.now``."""

    class Clock:
        now = 0.0

    c = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: c.now)
    return c


@pytest.fixture(autouse=True)
def _no_parent(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delenv(EVENTS_ENV, raising=False)


def test_durations():
    assert [format_duration(s) for s in (0, 8.4, 59.6, 65, 3599, 7384)] == [
        "0s", "8s", "1m 00s", "1m 05s", "59m 59s", "2h 03m",
    ]  # fmt: skip


def test_plain_lines_have_done_total_rate_and_eta(clock):
    out = io.StringIO()  # not a terminal: plain lines
    with Progress("sft training", 10, "step", stream=out, interval=30) as bar:
        assert bar.mode == "plain"
        clock.now = 10.0
        bar.update(2, loss=0.51234)  # 10 s since the start: too soon for a line
        clock.now = 40.0
        bar.update(2)  # 4 steps in 40 s: 10 s/step, 6 left
        clock.now = 50.0
        bar.update(6)  # the last step always shows
    assert out.getvalue().splitlines() == [
        "sft training: 4/10 steps (40%), 10.0s/step, ETA 1m 00s, loss 0.5123",
        "sft training: 10/10 steps (100%), 5.0s/step, took 50s, loss 0.5123",
    ]


def test_plain_rate_above_one_per_second_and_resumed_start(clock):
    out = io.StringIO()
    bar = Progress("ppo training", 100, "iteration", initial=40, stream=out, interval=0)
    clock.now = 4.0
    bar.update(10)  # 10 iterations (not 50) in 4 s since the resumed start
    bar.close()
    assert out.getvalue().splitlines() == [
        "ppo training: 50/100 iterations (50%), 2.50 iterations/s, ETA 20s"
    ]


def test_a_terminal_gets_a_live_bar():
    term = Terminal()
    with Progress("reward training", 5, "step", stream=term) as bar:
        assert bar.mode == "bar"
        for _ in range(5):
            bar.update(1, loss=0.7)
    text = term.getvalue()
    assert "\r" in text and "5/5" in text and "loss=0.7" in text
    assert "reward training: 100%" in text


def test_the_environment_decides_for_a_task_and_events_reach_the_parent(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "plain")
    assert Progress("x", 1, stream=Terminal()).mode == "plain"  # rlhf run piped: plain
    monkeypatch.setenv(PROGRESS_ENV, "bar")
    monkeypatch.setenv(EVENTS_ENV, "1")
    pipe = io.StringIO()  # a kfp.local task's output is a pipe even under a terminal
    with Progress("sft training", 3, "step", stream=pipe) as bar:
        assert bar.mode == "events"
        bar.update(3, loss=1.0)
    events = [parse_event(line) for line in pipe.getvalue().splitlines()]
    assert [e["kind"] for e in events] == ["start", "update", "end"]
    assert events[0] == {"kind": "start", "desc": "sft training", "total": 3, "unit": "step",
                         "initial": 0}  # fmt: skip
    assert events[1] == {"kind": "update", "n": 3, "postfix": {"loss": "1"}}


def test_summary_lines_and_table():
    sft = {"val_loss_start": 6.2324, "val_loss": 5.9148, "steps": 7.0}
    sft_result = render_headlines(STAGES["sft"].summary, sft)
    assert (
        summary_line("sft", 74.6, sft_result) == "<== sft done in 1m 15s: val loss 6.232 -> 5.915"
    )
    # KFP's Metrics names have "." for "/"; a metric a stage did not report is left out.
    evaluate = {"win_rate_gold": 0.664, "kl_candidate_reference": 0.4912, "candidate.gold_mean": 1}
    records = [
        StageRecord("sft", 74.6, sft, result=sft_result),
        StageRecord("evaluate", 3725, evaluate,
                    result=render_headlines(STAGES["evaluate"].summary, evaluate)),
        StageRecord("ppo", 9.0, {}, failed=True),
    ]  # fmt: skip
    assert summary_table(records).splitlines() == [
        "stage       time  result",
        "--------  ------  ------",
        "sft       1m 15s  val loss 6.232 -> 5.915",
        "evaluate  1h 02m  gold win rate 66.4%, KL 0.491",
        "ppo           9s  FAILED",
    ]


EXECUTOR_LOG = """\
    [KFP Executor 2026-12-03 02:07:34,007 INFO]: Looking for component `sft`
    [KFP Executor 2026-12-03 02:07:34,008 INFO]: Got executor_input:
    {
        "inputs": {
            "parameterValues": {
                "epochs": 1
            }
        },
        "outputs": {}
    }
    ::rlhf-console::{"kind": "start", "desc": "sft training", "total": 2, "unit": "step", "initial": 0}
    ::rlhf-console::{"kind": "update", "n": 2, "postfix": {"loss": "5.9"}}
    ::rlhf-console::{"kind": "end"}
    02:07:45 WARNING rlhf.ppo: ppo iteration 3: policy entropy 0.0100 is below 0.0500
    ::rlhf-console::{"kind": "stage", "stage": "sft", "seconds": 12.5, "failed": false, "metrics": {"val_loss": 5.9}}
    [KFP Executor 2026-12-03 02:07:48,186 INFO]: Wrote executor output file to /x/executor_output.json.
    Traceback (most recent call last):
      File "x.py", line 1, in <module>
    ValueError: boom
    [KFP Executor 2026-12-03 02:07:48,190 ERROR]: a real error

\n--------------------------------------------------------------------------------
"""


@pytest.mark.parametrize("terminal", [False, True])
def test_kfp_output_keeps_the_tasks_lines_and_drops_kfps(terminal):
    out = Terminal() if terminal else io.StringIO()
    task_output = TaskOutput(out, verbose=False, bars=terminal)
    task_output.write(EXECUTOR_LOG)
    task_output.finish()
    lines = [line.split("\r")[-1] for line in out.getvalue().split("\n")[:-1]]
    kept = [line for line in lines if "sft training" not in line]
    assert kept == [
        "02:07:45 WARNING rlhf.ppo: ppo iteration 3: policy entropy 0.0100 is below 0.0500",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: boom",
        "[KFP Executor 2026-12-03 02:07:48,190 ERROR]: a real error",
    ]
    bar = [line for line in lines if "sft training" in line]
    assert bool(bar) == terminal and (not bar or "2/2" in bar[-1])
    assert [(r.stage, r.metrics, r.failed) for r in task_output.records] == [
        ("sft", {"val_loss": 5.9}, False)
    ]


def test_kfp_output_verbose_keeps_everything_but_the_events():
    out = io.StringIO()
    task_output = TaskOutput(out, verbose=True, bars=False)
    task_output.write(EXECUTOR_LOG)
    task_output.finish()
    text = out.getvalue()
    assert '"parameterValues": {' in text and "Got executor_input:" in text
    assert "::rlhf-console::" not in text and len(task_output.records) == 1


def test_log_records_go_to_the_current_stderr(monkeypatch):
    import io
    import logging
    import sys

    from rlhf import log_setup

    log_setup.configure()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("rlhf.test").warning("one")
    first.close()  # a captured stream that has ended, as between two tests
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("rlhf.test").warning("two")
    assert "two" in second.getvalue() and "one" not in second.getvalue()
