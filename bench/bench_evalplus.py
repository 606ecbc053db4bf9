"""
bench_evalplus.py: evaluate.py's HumanEval+ / MBPP+ verdicts side by side with EvalPlus's own, task by task.

Each task's canonical solution is scored as is and through mutants that change only its result (a tuple for a list,
an int for a bool, a float a few ulps away, string dict keys, ...) or its logic (off by one, None). Every (task,
mutant) gets a base and a plus verdict from evaluate.py (the path a model's samples take) and from evalplus 0.3.1's
check_correctness with the ground truth it computes itself; the table counts where they agree.

    pip install evalplus==0.3.1          # bench-only
    python bench/bench_evalplus.py --data-dir DATA                         # both benchmarks, every mutant
    python bench/bench_evalplus.py --data-dir DATA --benchmarks humaneval+ --limit 40 --mutants canonical tuple_list
    python bench/bench_evalplus.py --data-dir DATA --lenient        # evaluate.py --lenient (plain data) instead

EvalPlus runs with min_time_limit 4 s (evaluate.py's floor, and that of EvalPlus's releases after 0.3.1; 0.3.1's
default is 1 s, which turns a loaded 2-core machine's noise into timeouts), gt_time_limit_factor 4 and fast_check, as
its CLI does.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILES = {"humaneval+": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp+": "MbppPlus-v0.2.0.jsonl.gz"}

# Each mutant rewrites the entry point's result r; a result a mutant does not apply to comes back unchanged.
MUTANTS = {
    "canonical": "r",
    # result type only: EvalPlus's `out == exp` decides, so these pass exactly when Python's == says so
    "tuple_list": "list(r) if type(r) is tuple else tuple(r) if type(r) is list else r",
    "bool_int": "int(r) if type(r) is bool else r",
    "int_bool": "bool(r) if type(r) is int and r in (0, 1) else r",
    "int_float": "float(r) if type(r) is int else r",
    "set_list": "sorted(r, key=repr) if type(r) in (set, frozenset) else r",
    "str_keys": "{str(k): v for k, v in r.items()} if type(r) is dict else r",
    "float_rel_1e-10": "r * (1 + 1e-10) if type(r) is float else [x * (1 + 1e-10) if type(x) is float else x for x in r]"
                       " if type(r) is list else r",
    "float_rel_1e-5": "r * (1 + 1e-5) + 1e-5 if type(r) is float else r",
    # logic: wrong by EvalPlus wherever the result is of the type touched
    "off_by_one": "r + 1 if type(r) is int else r[:-1] if type(r) in (list, str) and r else not r if type(r) is bool else r",
    "none": "None",
}


def mutant_code(code, entry, mutant):
    return (f"{code}\n\n_recode_orig = {entry}\ndef {entry}(*args, **kwargs):\n"
            f"    r = _recode_orig(*args, **kwargs)\n    return {MUTANTS[mutant]}\n")


def read_rows(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


FIND_ZERO_BUG = "assert abs(_poly(*inp, out)) <= atol\n                            continue"
FIND_ZERO_FIX = ("assert abs(_poly(*inp, out)) <= atol\n                            details[i] = True\n"
                 "                            progress.value += 1\n                            continue")


def patch_evalplus():
    """evalplus 0.3.1's find_zero oracle (HumanEval/32) skips recording the input as passed, so every solution fails;
    its repository fixed this after the release. Recompile unsafe_execute with the fix."""
    import inspect
    import textwrap
    import evalplus.eval as ev
    source = textwrap.dedent(inspect.getsource(ev.unsafe_execute))
    assert FIND_ZERO_BUG in source, "this evalplus is not 0.3.1: check its find_zero oracle before patching"
    exec(compile(source.replace(FIND_ZERO_BUG, FIND_ZERO_FIX), ev.__file__, "exec"), ev.__dict__)
    print("evalplus: patched the HumanEval/32 find_zero oracle (0.3.1 fails every solution there)", file=sys.stderr)


def evalplus_side(name, data, samples_path, workers):
    """Runs in its own interpreter (no torch, no other task's ground truth): evalplus's 4 GiB address-space cap per
    test counts what the test process inherits, which would make canonical MBPP+ solutions fail on memory.
    Prints {task_id: [n, base passes, plus passes]} as JSON."""
    patch_evalplus()
    print("evalplus: ground truth computed one task at a time in a process without torch (its memory cap counts "
          "the memory a test process inherits)", file=sys.stderr)
    from evalplus.eval import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import check_correctness
    from evalplus.gen.util import trusted_exec
    dataset = "humaneval" if name == "humaneval+" else "mbpp"
    rows = {r["task_id"]: r for r in read_rows(data)}
    samples = defaultdict(list)
    for line in Path(samples_path).read_text().splitlines():
        s = json.loads(line)
        samples[s["task_id"]].append(s["solution"])
    if dataset == "mbpp":
        from evalplus.data.mbpp import mbpp_deserialize_inputs
        for tid in samples:
            for g in ("base_input", "plus_input"):
                rows[tid][g] = mbpp_deserialize_inputs(tid, rows[tid][g])

    def one_task(tid):
        r = rows[tid]
        truth = {}
        for g in ("base", "plus"):
            truth[g], truth[f"{g}_time"] = trusted_exec(r["prompt"] + r["canonical_solution"], r[f"{g}_input"],
                                                        r["entry_point"], record_time=True,
                                                        output_not_none=r["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
                                                        and dataset == "mbpp")
        counts = [0, 0, 0]
        for code in samples[tid]:
            res = check_correctness(dataset, 0, r, code, truth, fast_check=True, min_time_limit=4.0,
                                    gt_time_limit_factor=4.0)
            base = res["base"][0] == "pass"   # EvalPlus reports plus as base and plus, as evaluate.py does
            counts[0] += 1
            counts[1] += base
            counts[2] += base and res["plus"][0] == "pass"
        return tid, counts

    with ThreadPoolExecutor(workers) as pool:
        print(json.dumps(dict(pool.map(one_task, list(samples)))))


def evalplus_verdicts(name, data, samples_path, workers):
    cmd = [sys.executable, __file__, "--evalplus-side", name, str(data), str(samples_path), str(workers)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    return {tid: tuple(c) for tid, c in json.loads(out.strip().splitlines()[-1]).items()}


def ours_verdicts(name, data, samples_path, workers, lenient):
    """The same samples through evaluate.py --samples: {task_id: (n, base passes, plus passes)}."""
    import evaluate
    out = Path(tempfile.mkdtemp(prefix="recode-evalplus-"))
    args = ["--benchmark", name, "--data", str(data), "--samples", str(samples_path), "--out", str(out),
            "--skip-canonical", "--workers", str(workers)] + ["--lenient"] * lenient
    tasks = evaluate.main(args)["tasks"]
    return {tid: (t["n"], t.get("base", 0), t.get("plus", 0)) for tid, t in tasks.items() if t["n"]}


def mutant_samples(rows, mutants, folder):
    """One samples file per mutant: every task's canonical solution, its result rewritten by the mutant."""
    paths = {}
    for m in mutants:
        paths[m] = Path(folder) / f"{m}.jsonl"
        paths[m].write_text("".join(json.dumps({"task_id": r["task_id"], "solution": mutant_code(
            r["prompt"] + r["canonical_solution"], r["entry_point"], m)}) + "\n" for r in rows))
    return paths


def compare(name, label, ours, theirs):
    """Per-task agreement of (n, base, plus) counts; returns the disagreeing (task, group, ours, theirs)."""
    diffs = []
    for tid in sorted(set(ours) | set(theirs)):
        a, b = ours.get(tid), theirs.get(tid)
        for i, g in ((1, "base"), (2, "plus")):
            if a is None or b is None or a[i] != b[i]:
                diffs.append((tid, g, a and a[i], b and b[i]))
    tasks = len(set(ours) | set(theirs))
    base = tasks - sum(d[1] == "base" for d in diffs)
    plus = tasks - sum(d[1] == "plus" for d in diffs)
    print(f"{label:<16} {base:>5}/{tasks:<5} {plus:>5}/{tasks:<5}")
    return diffs


def main():
    if sys.argv[1:2] == ["--evalplus-side"]:
        name, data, samples, workers = sys.argv[2:]
        return evalplus_side(name, data, samples, int(workers))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--benchmarks", nargs="+", default=list(FILES), choices=list(FILES))
    ap.add_argument("--samples", help="score this samples file (EvalPlus format, one benchmark) instead of mutants")
    ap.add_argument("--mutants", nargs="+", default=list(MUTANTS), choices=list(MUTANTS))
    ap.add_argument("--tasks", nargs="+", help="only these task ids")
    ap.add_argument("--limit", type=int, help="first N tasks of each benchmark")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--lenient", action="store_true", help="score with evaluate.py --lenient (plain-data comparison)")
    cfg = ap.parse_args()
    print(f"config: {vars(cfg)}")
    for name in cfg.benchmarks:
        data = Path(cfg.data_dir) / FILES[name]
        rows = [r for r in read_rows(data) if not cfg.tasks or r["task_id"] in cfg.tasks][:cfg.limit]
        if len(rows) < len(read_rows(data)):   # both scorers read the same subset file
            data = Path(tempfile.mkdtemp(prefix="recode-evalplus-data-")) / FILES[name]
            with gzip.open(data, "wt") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        runs = {"samples": Path(cfg.samples)} if cfg.samples else mutant_samples(
            rows, cfg.mutants, tempfile.mkdtemp(prefix="recode-evalplus-mutants-"))
        results, seconds = {}, Counter()
        for label, path in runs.items():
            start = time.perf_counter()
            ours = ours_verdicts(name, data, path, cfg.workers, cfg.lenient)
            seconds["evaluate.py"] += time.perf_counter() - start
            start = time.perf_counter()
            results[label] = (ours, evalplus_verdicts(name, data, path, cfg.workers))
            seconds["evalplus"] += time.perf_counter() - start
        print(f"\n{name}: {len(rows)} tasks; " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
        print(f"{'samples':<16} {'base agree':>11} {'plus agree':>11}")
        diffs = [(label, *d) for label, (ours, theirs) in results.items() for d in compare(name, label, ours, theirs)]
        for label, tid, g, a, b in diffs[:60]:
            print(f"    {label} {tid} {g}: evaluate.py {a}, evalplus {b} passing")
        total = sum(2 * len(set(o) | set(t)) for o, t in results.values())
        print(f"{name}: {total - len(diffs)}/{total} per-task verdicts agree")


if __name__ == "__main__":
    main()
