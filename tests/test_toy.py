"""
Tests for the toy world: synth.py's toy tasks and grpo.py's toy pipeline (no --model), scaled down to run in CI.

    python -m pytest -q tests/test_toy.py
"""

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import grpo  # noqa: E402
import synth  # noqa: E402
from synth import extract_code, split_reasoning  # noqa: E402
from execute import run_jobs  # noqa: E402
from synth import TOY_FILTERS, TOY_MAPS, TOY_REDUCERS, toy_tasks  # noqa: E402


def template_parts(tasks):
    return {tuple(t["template"].split("-")) for t in tasks}


def test_toy_tasks_are_deterministic_and_held_out_by_template():
    train, heldout = toy_tasks(seed=0)
    assert (train, heldout) == toy_tasks(seed=0)
    assert toy_tasks(seed=1) != (train, heldout)
    train_templates, heldout_templates = template_parts(train), template_parts(heldout)
    assert heldout_templates and not train_templates & heldout_templates  # no held-out triple is ever trained on
    for position, names in enumerate((TOY_FILTERS, TOY_MAPS, TOY_REDUCERS)):  # but each of its parts is
        seen = Counter(t[position] for t in train_templates)
        assert set(seen) == set(names) and min(seen.values()) >= 3, seen
    ids = [t["task_id"] for t in train + heldout]
    assert len(set(ids)) == len(ids) and len({t["prompt"] for t in train + heldout}) == len(ids)


def test_toy_references_are_recode_format_and_pass_their_tests():
    train, heldout = toy_tasks(seed=0, per_template=2)
    tasks = train + heldout
    completions = [synth.format_completion(t["reference"]["reasoning"], t["reference"]["code"]) for t in tasks]
    assert all(grpo.code_format_reward(c) == 1.0 for c in completions)
    assert all(split_reasoning(c)[0].strip() == t["reference"]["reasoning"] for c, t in zip(completions, tasks))
    assert all(extract_code(c) == t["reference"]["code"] for c, t in zip(completions, tasks))
    # the reference passes; the code of the same template with the other comparison (or parity) mostly does not
    swapped = {">": "<", "<": ">", "== 0": "== 1", "== 1": "== 0"}
    wrong = []
    for t in tasks:
        code = t["reference"]["code"]
        op = next(o for o in swapped if f" {o}" in code.split(" if ")[1])
        head, cond = code.split(" if ")
        wrong.append(head + " if " + cond.replace(f" {op}", f" {swapped[op]}", 1))
    jobs = [{"id": i, "code": code, "tests": t["tests"]} for i, (t, code) in
            enumerate([(t, t["reference"]["code"]) for t in tasks] + list(zip(tasks, wrong)))]
    status = [r["status"] for r in run_jobs(jobs, workers=2, timeout=3.0, fail_fast=True)]
    assert status[:len(tasks)] == ["passed"] * len(tasks)
    assert status[len(tasks):].count("failed") >= 0.8 * len(tasks)  # the tests tell templates apart


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    args = grpo.parse_args(["--out", str(out), "--toy-scale", "0.05"])
    return out, grpo.toy_world(args)


def test_scaled_down_pipeline_makes_every_artifact(toy_run):
    out, results = toy_run
    for name in ("train", "heldout", "sft", "crpl_train", "crpl_heldout"):
        assert (out / "data" / f"{name}.jsonl").stat().st_size > 0
    assert (out / "base" / "config.json").exists() and (out / "base" / "tokenizer.json").exists()
    assert grpo.finished(str(out / "sft"), 10)
    import reward
    assert reward.latest_checkpoint(str(out / "rm")).endswith("step_000004")  # 90 steps at scale 0.05
    for mode in ("outcome", "ungated", "gated"):
        assert grpo.finished(str(out / mode), 2)
        logged = [json.loads(line) for line in open(out / mode / "metrics.jsonl")]
        assert [m["step"] for m in logged] == [0, 1, 2] and "eval/pass@1" in logged[-1]
    assert set(results["table"]) == {"warm start (SFT)", "outcome GRPO", "ungated", "CG-GRPO"}
    for row in results["table"].values():
        assert 0 <= row["pass1_greedy"] <= 1 and 0 <= row["pass1_sampled"] <= 1
        assert 0 < row["r_proc"] < 1 and row["think_tokens"] >= 0
    assert 0 <= results["rm_heldout_pair_acc"] <= 1
    assert json.loads((out / "results.json").read_text())["table"] == results["table"]


def test_the_warm_start_data_mixes_plain_careful_and_slipped_references(toy_run):
    """The SFT file: a subset of the training tasks whose references are plain or the toy teacher's optimized
    rewrite (the style the reward model prefers), and some carry a slip that the tests catch."""
    out, _ = toy_run
    train = {t["task_id"]: t for t in map(json.loads, open(out / "data" / "train.jsonl"))}
    sft = [json.loads(line) for line in open(out / "data" / "sft.jsonl")]
    assert 0 < len(sft) < len(train) and all(t["task_id"] in train for t in sft)
    careful = [t for t in sft if t["reference"]["reasoning"].startswith("Step 1: ")]
    slipped = [t for t in sft if t["reference"]["code"] != train[t["task_id"]]["reference"]["code"]]
    assert 0 < len(careful) < len(sft) / 2 and len(sft) / 4 < len(slipped) < len(sft)
    for t in slipped:  # the slip is in the reasoning and the code alike
        condition = re.search(r" if (.+?)[)\]]", t["reference"]["code"])[1]
        assert condition in t["reference"]["reasoning"]
        assert condition not in train[t["task_id"]]["reference"]["reasoning"]


@pytest.mark.parametrize("in_constant", [False, True])
def test_slips_are_consistent_and_caught_by_the_tests(in_constant):
    train, heldout = toy_tasks(seed=0, per_template=1)
    tasks = train + heldout
    slipped = [grpo.toy_slip(t["reference"], in_constant=in_constant) for t in tasks]
    for t, s in zip(tasks, slipped):
        old, new = (re.search(r" if (.+?)[)\]]", code)[1] for code in (t["reference"]["code"], s["code"]))
        assert old != new and s["reasoning"] == t["reference"]["reasoning"].replace(old, new)
        assert s["code"] == t["reference"]["code"].replace(old, new)
        if in_constant and re.fullmatch(r"x [<>] [1-8]", old):  # the constant slip keeps the text's length
            assert len(s["reasoning"]) == len(t["reference"]["reasoning"]) and "=" not in new
    jobs = [{"id": i, "code": s["code"], "tests": t["tests"]} for i, (t, s) in enumerate(zip(tasks, slipped))]
    failed = [r["status"] == "failed" for r in run_jobs(jobs, workers=2, timeout=3.0, fail_fast=True)]
    assert sum(failed) >= 0.75 * len(tasks)  # the boundary value in the first test case catches most slips


def test_weak_tests_let_boundary_slips_pass_and_strong_tests_catch_them():
    """The weak-tests world's premise: on a task of the weak share a slip at the filter's boundary (>= for >) passes
    every weak test, and the strong tests (what held-out tasks are scored with) catch it; the other parity fails
    both; the reference passes both."""
    train, heldout = toy_tasks(seed=0, per_template=1)
    tasks = [grpo.toy_with_tests(t, "weak") for t in train + heldout]
    boundary = [t for t in tasks if t["template"].split("-")[0] in ("greater", "less", "positive", "negative")]
    parity = [t for t in tasks if t not in boundary]
    assert boundary and parity
    jobs = []
    for t in tasks:
        for tests in ("tests", "strong_tests"):
            for code in (t["reference"]["code"], grpo.toy_slip(t["reference"], in_constant=True)["code"]):
                jobs.append({"id": (t["task_id"], tests, code == t["reference"]["code"]), "code": code,
                             "tests": t[tests]})
    status = {r["id"]: r["status"] for r in run_jobs(jobs, workers=2, timeout=3.0, fail_fast=True)}
    assert all(status[(t["task_id"], tests, True)] == "passed" for t in tasks for tests in ("tests", "strong_tests"))
    assert all(status[(t["task_id"], "tests", False)] == "passed" for t in boundary)
    caught = [status[(t["task_id"], "strong_tests", False)] == "failed" for t in boundary]
    assert sum(caught) >= 0.85 * len(boundary), [t["task_id"] for t, c in zip(boundary, caught) if not c]
    assert sum(status[(t["task_id"], "tests", False)] == "failed" for t in parity) >= 0.9 * len(parity)
    for t in tasks:  # weak: few cases, never the boundary value
        assert len(t["tests"]["cases"]) < len(t["strong_tests"]["cases"]) and t["tests"] == t["weak_tests"]


def test_the_weak_share_trains_on_weak_tests_and_held_out_tasks_on_strong_ones(toy_run):
    out, results = toy_run
    cfg = json.loads((out / "toy_config.json").read_text())
    assert cfg["toy_world"] == "weak-tests"
    train = [json.loads(line) for line in open(out / "data" / "train.jsonl")]
    heldout = [json.loads(line) for line in open(out / "data" / "heldout.jsonl")]
    weak = [t for t in train if t["weak"]]
    assert 0.5 * cfg["weak_fraction"] * len(train) < len(weak) < len(train)  # a share, not all of them
    assert all(t["tests"] == t["weak_tests"] != t["strong_tests"] for t in weak)
    assert all(t["tests"] == t["strong_tests"] for t in train + heldout if t not in weak)
    for name, row in results["table"].items():  # held-out: scored on the strong tests, the weak ones beside them
        assert 0 <= row["pass1_greedy"] <= 1 and 0 <= row["pass1_weak_greedy"] <= 1 and 0 <= row["cut"] <= 1
    pairs = [json.loads(line) for line in open(out / "data" / "slip_pairs_heldout.jsonl")]
    assert [p["task_id"] for p in pairs] == [t["task_id"] for t in heldout]
    assert all(p["pair_type"] == "slip" and p["chosen"] == t["reference"] != p["rejected"]
               for p, t in zip(pairs, heldout))


def test_the_reward_model_tells_slipped_reasoning_apart(toy_run):
    """Held-out slip pairs (the reference over its slipped copy, reasoning only) are reported apart from the CRPL
    pairs, and the reward model trained at CI size already ranks them better than chance."""
    _, results = toy_run
    pairs = results["rm_heldout_pairs"]
    assert {"slip", "all", "optimized>original"} <= set(pairs)
    assert pairs["all"]["pairs"] == sum(row["pairs"] for kind, row in pairs.items() if kind not in ("all", "slip"))
    assert pairs["slip"]["pairs"] == results["heldout_tasks"] and pairs["slip"]["acc"] > 0.5


def test_the_style_bias_world_keeps_perfect_tests(tmp_path):
    """--toy-world style-bias: every training task keeps its strong tests and the reward model has no slip pairs."""
    args = grpo.parse_args(["--toy-world", "style-bias", "--toy-scale", "0.05", "--out", str(tmp_path)])
    assert args.toy_world == "style-bias" and "weak_fraction" not in grpo.toy_settings(args)
    paths, _, slips = grpo.toy_data(grpo.toy_settings(args), str(tmp_path), True)
    train = [json.loads(line) for line in open(paths["train"])]
    assert slips is None and not list(tmp_path.glob("data/slip_pairs_*")) and not any("weak" in t for t in train)
    assert all(t["tests"] != t["weak_tests"] and t["tests"] != t["strong_tests"] for t in train)
    with pytest.raises(SystemExit):
        grpo.parse_args(["--toy-task", "math", "--toy-world", "weak-tests"])


def test_the_gate_held(toy_run):
    """Every dumped sample: gated, a failing sample's reward is R_fmt alone even though the reward model scored it
    (--proc-all); ungated, its R_proc is added; outcome, no R_proc at all."""
    out, _ = toy_run
    scored_failures = 0
    for mode in ("outcome", "ungated", "gated"):
        for path in sorted((out / mode / "samples").glob("step_*.jsonl")):
            for row in map(json.loads, open(path)):
                if mode == "outcome":
                    assert row["r_proc"] is None and row["reward"] == pytest.approx(row["r_fmt"] + row["r_out"])
                    continue
                expected = row["r_fmt"] + row["r_out"] + (row["r_proc"] if mode == "ungated" or row["r_out"] == 1
                                                          else 0.0)
                assert row["reward"] == pytest.approx(expected), (mode, row)
                scored_failures += mode == "gated" and row["r_out"] == 0 and row["r_proc"] > 0
    assert scored_failures > 0  # failing samples were scored, so the gate had something to hold back


def test_a_rerun_reuses_every_artifact(toy_run):
    out, results = toy_run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "results.json"}
    again = grpo.toy_world(grpo.parse_args(["--out", str(out), "--toy-scale", "0.05"]))
    assert again["table"] == results["table"] and again["rm_heldout_pair_acc"] == results["rm_heldout_pair_acc"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    with pytest.raises(SystemExit, match="other settings"):
        grpo.toy_world(grpo.parse_args(["--out", str(out), "--toy-scale", "0.1"]))
