"""
Tests for the math task (the paper's generalization experiment) in grpo.py: the math format and outcome rewards, the
gate on hand-made samples and in a batch mixed with code, the math system prompt, the toy math family, and a short toy
math run of grpo.py's toy world. (Math problem files and the answer checker: tests/test_synth.py.)

    python -m pytest -q tests/test_math.py
"""

import json
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
from synth import score_math, split_reasoning  # noqa: E402
from synth import TOY_MATH_OPS, Sample, toy_math_tasks  # noqa: E402

PROBLEM = dict(task_id="apples", task="math", prompt="Ann has 3 bags of 4 apples and eats 2. How many are left?",
               answer="10", tests={}, code_prefix="", code_prompt="")


def sample(text):
    return Sample(0, text, [1], [0.0], "eos", [1])


# ---------------------------------------------------------------------------------------------------------------
# Rewards


def test_math_format_reward():
    good = synth.format_math_completion("3 * 4 = 12, 12 - 2 = 10", "10")
    assert good == "<think>\n3 * 4 = 12, 12 - 2 = 10\n</think>\n<answer>\n\\boxed{10}\n</answer>"
    assert grpo.math_format_reward(good) == 1.0
    assert grpo.math_format_reward(good.replace("\\boxed{10}", "\\boxed{\\frac{1}{2}}")) == 1.0  # nested braces
    bad = [good.replace("\\boxed{10}", "10"),                       # no box
           good.replace("\\boxed{10}", "\\boxed{}"),                # an empty box
           good.replace("\\boxed{10}", "\\boxed{10"),               # a box cut off
           good.replace("<think>\n3 * 4 = 12, 12 - 2 = 10\n</think>", "<think> </think>"),  # no reasoning
           "<think>\n3 * 4 = 12\n</think>\n\\boxed{10}",             # the box outside <answer>
           good + " and more", good.replace("</answer>", "</answer><answer>"),
           synth.format_completion("x", "print(10)")]                 # a code answer is not a math answer
    assert [grpo.math_format_reward(t) for t in bad] == [0.0] * len(bad)


def test_math_outcome_uses_the_benchmark_checker():
    texts = [synth.format_math_completion("r", "10"), synth.format_math_completion("r", "10.0"),
             synth.format_math_completion("r", "\\frac{20}{2}"), synth.format_math_completion("r", "12"),
             "<think>r</think><answer>\\boxed{12} then \\boxed{10}</answer>", "the answer is 10"]
    rewards = grpo.math_outcome_reward(None, [PROBLEM] * len(texts), [sample(t) for t in texts])
    assert rewards == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert rewards == [float(score_math(t, PROBLEM["answer"])) for t in texts]  # one checker, training and scoring


@pytest.mark.parametrize("mode,proc_all", [("gated", False), ("gated", True), ("ungated", False), ("outcome", False)])
def test_gated_math_reward_on_hand_made_samples(monkeypatch, mode, proc_all):
    """A right answer with reasoning gets R_proc when gated; a wrong answer never does, however much the reward model
    (faked: it loves every reasoning) likes it; a right answer out of format still counts as R_out."""
    import reward
    asked = []

    def fake_score(model, tokenizer, problems, reasonings, codes=None, batch_size=16):
        asked.extend(reasonings)
        assert codes is None or all(c is None for c in codes)  # a math sample has no code to show the model
        return [0.9] * len(reasonings)

    monkeypatch.setattr(reward, "score", fake_score)
    texts = [synth.format_math_completion("3 bags of 4 is 12; eating 2 leaves 10.", "10"),
             synth.format_math_completion("3 bags of 4 is 7; eating 2 leaves 5.", "5"),
             "3 * 4 - 2 = \\boxed{10}"]
    args = grpo.parse_args(["--reward", mode] + (["--proc-all"] if proc_all else []))
    parts = grpo.compute_rewards(args, [PROBLEM] * 3, [sample(t) for t in texts], (None, None))
    assert parts["r_fmt"].tolist() == [1.0, 1.0, 0.0] and parts["r_out"].tolist() == [1.0, 0.0, 1.0]
    expected = {"gated": [2.9, 1.0, 1.9], "ungated": [2.9, 1.9, 1.9], "outcome": [2.0, 1.0, 1.0]}[mode]
    assert parts["reward"].tolist() == pytest.approx(expected)
    assert any("is 7" in r for r in asked) == (mode == "ungated" or proc_all)
    if mode == "outcome":
        assert not asked and np.isnan(parts["r_proc"]).all()


def test_mixed_code_and_math_batch(monkeypatch):
    import reward
    monkeypatch.setattr(reward, "score", lambda m, t, problems, reasonings, codes=None, batch_size=16:
                        [0.5 if c is None else 0.25 for c in codes])
    code_problem = dict(task_id="add", task="code", prompt="add", code_prefix="", code_prompt="",
                        tests={"base": {"type": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}]}})
    texts = [synth.format_completion("sum", "def add(a, b):\n    return a + b"), synth.format_math_completion("r", "10"),
             synth.format_math_completion("r", "11")]
    args = grpo.parse_args(["--reward", "gated", "--exec-workers", "1"])
    parts = grpo.compute_rewards(args, [code_problem, PROBLEM, PROBLEM], [sample(t) for t in texts], (None, None))
    assert parts["r_fmt"].tolist() == [1.0, 1.0, 1.0] and parts["r_out"].tolist() == [1.0, 1.0, 0.0]
    assert parts["reward"].tolist() == [2.25, 2.5, 1.0]


# ---------------------------------------------------------------------------------------------------------------
# Problems


def test_math_problems_get_the_math_system_prompt(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"prompt": "1+1?", "answer": 2}) + "\n")
    problems = synth.load_problems([str(path)])
    chatless = type("Tokenizer", (), dict(chat_template=None, name_or_path="plain"))()
    prompt = grpo.prompt_text(grpo.parse_args(["--prompt-format", "recode"]), chatless, problems[0])
    assert prompt.endswith("1+1?") and "\\boxed" in prompt and "```python" not in prompt  # the math system prompt


# ---------------------------------------------------------------------------------------------------------------
# The toy math family


def test_toy_math_tasks_are_deterministic_held_out_by_chain_and_right():
    train, heldout = toy_math_tasks(seed=0)
    assert (train, heldout) == toy_math_tasks(seed=0) and toy_math_tasks(seed=1) != (train, heldout)
    train_chains, heldout_chains = {t["template"] for t in train}, {t["template"] for t in heldout}
    assert heldout_chains and not train_chains & heldout_chains
    seen = Counter(op for chain in train_chains for op in set(chain.split("-")))
    assert set(seen) == set(TOY_MATH_OPS) and min(seen.values()) >= 3
    ids = [t["task_id"] for t in train + heldout]
    assert len(set(ids)) == len(ids) and len({t["prompt"] for t in train + heldout}) == len(ids)
    apply = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    for t in train + heldout:
        reasoning = t["reference"]["reasoning"]
        steps = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", reasoning)
        assert len(steps) == len(t["template"].split("-"))  # one line of arithmetic per operation
        assert all(apply[op](int(a), int(b)) == int(c) for a, op, b, c in steps)
        assert all(1 <= int(c) <= 20 for *_, c in steps)  # small numbers, so a tiny model can learn them
        assert steps[-1][3] == t["answer"] == t["reference"]["answer"]
        assert re.search(r"has (\d+) ", t["prompt"])[1] == steps[0][0]  # the chain starts from the story's amount
        completion = synth.completion_target(t)
        assert grpo.math_format_reward(completion) == 1.0 and score_math(completion, t["answer"])
        assert split_reasoning(completion)[0].strip() == reasoning


@pytest.fixture(scope="module")
def toy_math_run(tmp_path_factory):
    """grpo.py --toy-task math at --toy-scale 0.02, with smaller RL batches than the toy world's so that the whole
    pipeline (tasks, CRPL, tokenizer, SFT, reward model, three GRPO runs, held-out table) takes a few seconds."""
    out = tmp_path_factory.mktemp("toy-math")
    with pytest.MonkeyPatch.context() as patch:
        toy = grpo.TOY_STYLE_BIAS   # the math world's settings
        patch.setitem(toy, "rl", dict(toy["rl"], batch_size=16, group_size=4, max_new_tokens=64))
        patch.setitem(toy, "sft", dict(toy["sft"], batch_size=8))
        return out, grpo.toy_world(grpo.parse_args(["--toy-task", "math", "--out", str(out), "--toy-scale", "0.02"]))


def test_short_toy_math_run(toy_math_run):
    out, results = toy_math_run
    rows = [json.loads(line) for line in open(out / "data" / "train.jsonl")]
    assert rows and all(r["task"] == "math" and r["task_id"].startswith("toymath/") for r in rows)
    crpl = [json.loads(line) for line in open(out / "data" / "crpl_train.jsonl")]
    assert crpl and all(r["optimized"]["answer"] == r["original"]["answer"] for r in crpl if r["optimized"])
    assert set(results["table"]) == {"warm start (SFT)", "outcome GRPO", "ungated", "CG-GRPO"}
    for row in results["table"].values():
        assert 0 <= row["pass1_greedy"] <= 1 and 0 <= row["pass1_sampled"] <= 1 and 0 < row["r_proc"] < 1
    scored_failures = 0
    for mode in ("outcome", "ungated", "gated"):
        logged = [json.loads(line) for line in open(out / mode / "metrics.jsonl")]
        assert "eval/pass@1" in logged[-1]
        for path in sorted((out / mode / "samples").glob("step_*.jsonl")):
            for row in map(json.loads, open(path)):
                proc = 0.0 if mode == "outcome" or (mode == "gated" and row["r_out"] != 1) else row["r_proc"]
                assert row["reward"] == pytest.approx(row["r_fmt"] + row["r_out"] + proc), (mode, row)
                scored_failures += mode == "gated" and row["r_out"] == 0 and row["r_proc"] > 0
    assert scored_failures > 0  # failing samples were scored (--proc-all), so the gate had something to hold back
    assert json.loads((out / "toy_config.json").read_text())["toy_task"] == "math"
