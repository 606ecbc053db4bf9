"""
grpo.py's rewards overlapped with decoding (--overlap-rewards) against the sequential path, on the same run: the
seconds of reward work left on the critical path once decoding ends (metrics.jsonl's reward_time), and whether
the two runs are identical (the same samples and rewards, the same metrics, the same weights at the end).

    python bench/bench_overlap.py --out runs/bench_overlap -- --model DIR --data train.jsonl --reward outcome \\
        --batch-size 128 --group-size 8 --max-new-tokens 144 --steps 3        # grpo.py's flags after --

Each repeat runs `python -m torch.distributed.run --standalone --nproc_per_node=1 grpo.py FLAGS --dump-every 1`
sequentially, then with --overlap-rewards, back to back, so that a busy machine slows both alike. A run's first
step is left out of the means (it starts the sandbox's workers). OMP_NUM_THREADS=1 unless set: one thread makes
decoding, and so the samples, reproducible from run to run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", default="runs/bench_overlap", help="run folders go here (replaced)")
p.add_argument("--repeats", type=int, default=1, help="pairs of runs (sequential, overlapped)")
p.add_argument("grpo_args", nargs=argparse.REMAINDER, help="-- then grpo.py's flags (no --out)")
args = p.parse_args()
flags = args.grpo_args[1:] if args.grpo_args[:1] == ["--"] else args.grpo_args
if not flags or "--out" in flags:
    p.error("give grpo.py's flags after --, without --out")
env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def run(out, extra):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(ROOT / "grpo.py"),
           *flags, "--dump-every", "1", "--out", str(out), *extra]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in open(out / "metrics.jsonl") if "gen_time" in line]


def samples(out):
    return [(path.name, path.read_text()) for path in sorted((out / "samples").glob("step_*.jsonl"))]


def final_weights(out):
    return load_file(str(sorted(out.glob("step_*"))[-1] / "model.safetensors"))


TIMES = ("step_time", "gen_time", "reward_time", "train_time", "tokens_per_s")
mean = lambda logged, key: sum(m[key] for m in logged[1:] or logged) / len(logged[1:] or logged)
rows, identical = [], True
for repeat in range(args.repeats):
    outs = {mode: Path(args.out) / f"{mode}{repeat}" for mode in ("sequential", "overlapped")}
    logged = {mode: run(out, ["--overlap-rewards"] if mode == "overlapped" else []) for mode, out in outs.items()}
    for mode in outs:
        rows.append(f"repeat {repeat} {mode:<10}  reward {mean(logged[mode], 'reward_time'):6.2f}s  "
                    f"generate {mean(logged[mode], 'gen_time'):6.2f}s  step {mean(logged[mode], 'step_time'):6.2f}s")
    rows[-1] += f"  reward time x{mean(logged['overlapped'], 'reward_time') / mean(logged['sequential'], 'reward_time'):.2f}"
    same_samples = samples(outs["sequential"]) == samples(outs["overlapped"])
    same_metrics = [{k: v for k, v in m.items() if k not in TIMES} for m in logged["sequential"]] == \
        [{k: v for k, v in m.items() if k not in TIMES} for m in logged["overlapped"]]
    a, b = final_weights(outs["sequential"]), final_weights(outs["overlapped"])
    same_weights = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows.append(f"repeat {repeat} identical: samples and rewards {same_samples}, metrics {same_metrics}, "
                f"weights {same_weights}")
    identical &= same_samples and same_metrics and same_weights
print(f"\nmeans over steps 2..{len(logged['sequential'])} of each run (reward = seconds after decoding):")
print("\n".join(rows))
sys.exit(0 if identical else 1)
