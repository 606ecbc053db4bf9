"""
bench_evaluate.py: the canonical-solution gate of evaluate.py on the real benchmark files, with wall times.

Every canonical solution must score 100% through the same path a model's samples take (sandbox, expected outputs,
special oracles, timeouts); anything less is a scorer bug, a data problem or a runner limit, and is printed.

    python bench/bench_evaluate.py --data-dir DATA                 # humaneval, humaneval+, mbpp, mbpp+
    python bench/bench_evaluate.py --data-dir DATA --benchmarks mbpp+ --fresh   # also re-record expected outputs

DATA is a folder with the benchmark files named in FILES below (the pinned downloads of evaluate.py, same bytes).

--fresh uses an empty expected-output cache, so the time includes recording the canonical outputs (EvalPlus does
the same once per dataset); without it a second run measures scoring only.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILES = {"humaneval": "HumanEval.jsonl.gz", "humaneval+": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp": "mbpp.jsonl",
         "mbpp+": "MbppPlus-v0.2.0.jsonl.gz", "bigcodebench": "BigCodeBench-early.jsonl.gz"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--benchmarks", default="humaneval,humaneval+,mbpp,mbpp+")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--fresh", action="store_true", help="empty expected-output cache (time includes recording)")
    cfg = ap.parse_args()
    print(f"config: {vars(cfg)}")
    if cfg.fresh:
        os.environ["RECODE_CACHE"] = tempfile.mkdtemp(prefix="recode-bench-cache-")
    import evaluate
    rows = []
    for name in cfg.benchmarks.split(","):
        out = tempfile.mkdtemp(prefix=f"recode-bench-{name}-")
        args = ["--benchmark", name, "--data", str(Path(cfg.data_dir) / FILES[name]), "--canonical-only", "--out", out]
        if cfg.workers:
            args += ["--workers", str(cfg.workers)]
        start = time.perf_counter()
        res = evaluate.main(args)
        seconds = time.perf_counter() - start
        gate = res["canonical"]
        rows.append((name, gate["total"], gate["passed"], res["counts"].get("skipped", 0), seconds, res["flags"]))
    print(f"\n{'benchmark':<12} {'tasks':>5}  {'passed':<26} {'skipped':>7} {'wall s':>7}")
    for name, total, passed, skipped, seconds, flags in rows:
        print(f"{name:<12} {total:>5}  {str(passed):<26} {skipped:>7} {seconds:>7.1f}")
        for flag in flags:
            print(f"    {flag}")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
