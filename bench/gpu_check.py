"""
GPU check of grpo.py's CUDA path: bf16, NCCL, FSDP2 and DDP, on a random-init policy of a real model's shape (no
download), with the reward model resident on the same GPU. It measures what a user sizing a run needs: seconds per
step (split into generation, reward and update), tokens per second and the peak GPU memory of each run.

    python bench/gpu_check.py --all                    # every GPU measurement of the engine in one call (~6 min on
                                                       # an H200): the graph-vs-eager check, bench_generate.py --gpu,
                                                       # and grpo.py's step with the engine's static step off and on
    python bench/gpu_check.py                          # Qwen2.5-1.5B's shape, 64 completions of up to 512 tokens
    python bench/gpu_check.py --shape tiny --device cpu --max-new-tokens 32 --steps 2   # the same plumbing on CPU
    python bench/gpu_check.py --grpo-args="--overlap-rewards --rollout-is token_truncate"   # with grpo.py's options
    python bench/gpu_check.py --engine growing         # generate(static=False): the decode step over a growing cache

It writes a work folder (--work, default a temporary one): a tokenizer trained on synth.py's toy tasks, the random
policy and reward model saved in Hugging Face layout, the toy tasks as training data; then it runs
`python -m torch.distributed.run --standalone --nproc_per_node=1 grpo.py ...` twice (FSDP2 with the gated reward,
DDP with the outcome reward; --proc-all, so that the reward model scores every completion) and prints one line per
run from its metrics.jsonl. The policy is random, so almost no
completion passes and almost every one runs to --max-new-tokens: the timings are those of full-length completions.
With --engine other than the default, grpo.py runs under this script's `--grpo-worker` mode, which sets
synth.generate's defaults before grpo.py imports it (grpo.py has no engine flag).
"""

import argparse
import json
import os
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENGINES = {"static": {}, "growing": {"static": False}, "no-graphs": {"cuda_graphs": False}}  # generate() defaults

if __name__ == "__main__" and sys.argv[1:2] == ["--grpo-worker"]:  # python gpu_check.py --grpo-worker ENGINE ARGS
    from execute import default_workers, start_pool
    start_pool(default_workers())  # what grpo.py does first: the sandbox starts before torch lives in the process
    import inspect
    import synth
    engine = synth.generate.__wrapped__  # under torch.inference_mode's wrapper
    names = list(inspect.signature(engine).parameters)[-len(engine.__defaults__):]
    engine.__defaults__ = tuple(ENGINES[sys.argv[2]].get(name, value) for name, value in zip(names,
                                                                                            engine.__defaults__))
    sys.argv = [str(ROOT / "grpo.py")] + sys.argv[3:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    sys.exit(0)

import torch  # noqa: E402

from synth import generate, tiny_model, toy_tasks, train_tiny_tokenizer  # noqa: E402

SHAPES = {  # config.json values of the real models, built here with random weights
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, rope_theta=1e6, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, rope_theta=1e6, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--shape", default="qwen2.5-1.5b", choices=SHAPES, help="the policy's shape")
p.add_argument("--rm-shape", default="qwen2.5-0.5b", choices=SHAPES, help="the reward model's backbone shape")
p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
p.add_argument("--batch-size", type=int, default=64, help="completions per step")
p.add_argument("--group-size", type=int, default=8)
p.add_argument("--max-new-tokens", type=int, default=None, help="default 512; 256 with --all")
p.add_argument("--steps", type=int, default=3, help="steps per run; the first one is the warm-up")
p.add_argument("--runs", nargs="+", default=["fsdp:gated", "ddp:outcome"], help="PARALLEL:REWARD pairs")
p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
p.add_argument("--engine", default="static", choices=ENGINES, help="generate()'s decode path in grpo.py's runs")
p.add_argument("--all", action="store_true", help="the engine's whole GPU check: graph-vs-eager, bench_generate.py "
                                                  "--gpu, and --runs fsdp:gated with --engine growing, then static "
                                                  "(--max-new-tokens 256 unless given)")
p.add_argument("--grpo-args", default="", help="more grpo.py flags for every run, as one string; write it "
                                               "--grpo-args=\"--overlap-rewards ...\" (with '=': it starts with --)")
args = p.parse_args()
args.max_new_tokens = args.max_new_tokens or (256 if args.all else 512)
print(vars(args))
if args.all and args.device != "cuda":
    raise SystemExit("error: --all measures CUDA graphs and needs --device cuda")
if args.device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("error: --device cuda but no CUDA device is visible (use --device cpu for the CPU plumbing)")
work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
work.mkdir(parents=True, exist_ok=True)

# ---- data, tokenizer, random policy and reward model
train, _ = toy_tasks(seed=0, per_template=2)
with open(work / "train.jsonl", "w") as f:
    f.writelines(json.dumps(t) + "\n" for t in train)
texts = [t["prompt"] + t["reference"]["reasoning"] + t["reference"]["code"] for t in train]
tokenizer = train_tiny_tokenizer(texts + ["<think>\n</think>\n<answer>\n```python\n```\n</answer>"] * 20,
                                 vocab_size=2048)
for name, shape in (("policy", args.shape), ("rm_backbone", args.rm_shape)):
    if not (work / name / "config.json").exists():
        model = tiny_model(tokenizer, seed=0, max_position_embeddings=32768, **SHAPES[shape])
        model.save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)
        del model
if not (work / "rm" / "reward_config.json").exists():
    import reward
    backbone = reward.load_backbone(str(work / "rm_backbone"))
    rm = reward.RewardModel(backbone, {"include_code": False, "max_length": 1024})
    reward.save_reward_model(rm, tokenizer, str(work / "rm"))
    del rm, backbone

summary = []  # the lines printed at the end


# ---- graph-vs-eager: the same tokens and log-probs, bit for bit, from the CUDA graphs and the eager static step
def graph_check():
    import synth
    captures = []
    capture = synth.StaticDecoder.capture

    def counted(self, window):
        captures.append((self.groups, window))
        return capture(self, window)

    synth.StaticDecoder.capture = counted
    with torch.device(args.device):
        model = tiny_model(tokenizer, seed=0, dtype=torch.bfloat16, initializer_range=0.02, **SHAPES[args.shape])
    # ~1.5% of the vocabulary ends a completion: rows finish at many different steps, the batch shrinks
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + list(range(1000, 1000 + model.config.vocab_size
                                                                             // 66))
    prompts = [t["prompt"] for t in train[:8]]
    for temperature in (1.0, 0.0):
        runs = {}
        for graphs in (True, False):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            runs[graphs] = generate(model, tokenizer, prompts, n=4, max_new_tokens=160, temperature=temperature,
                                    seed=1, cuda_graphs=graphs)
            torch.cuda.synchronize()
            runs[graphs, "s"] = time.perf_counter() - t0
        same = [(s.token_ids, s.logprobs) for s in runs[True]] == [(s.token_ids, s.logprobs) for s in runs[False]]
        lengths = {len(s.token_ids) for s in runs[True]}
        summary.append(f"graph vs eager, {args.shape} bf16, 8 prompts x 4 x 160 tokens, T={temperature}: "
                       f"{'IDENTICAL' if same else 'DIFFERENT'} tokens and log-probs; {len(lengths)} distinct "
                       f"lengths; {len(captures)} graphs captured (groups, window): {sorted(set(captures))}; "
                       f"{runs[True, 's']:.2f}s with graphs, {runs[False, 's']:.2f}s without")
        print(summary[-1], flush=True)
        captures.clear()
    synth.StaticDecoder.capture = capture
    del model
    torch.cuda.empty_cache()


def run_and_keep(cmd, keep):
    """Run cmd, echo its output, and add to the summary the lines for which keep(line) is true."""
    print("\n$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        print(line, end="", flush=True)
        if keep(line):
            summary.append(line.rstrip())
    if proc.wait():
        summary.append(f"FAILED (exit {proc.returncode}): {' '.join(cmd)}")


if args.all:
    graph_check()
    run_and_keep([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_engine.py"],
                 lambda line: " passed" in line or " failed" in line or "SKIPPED" in line)
    run_and_keep([sys.executable, str(ROOT / "bench" / "bench_generate.py"), "--gpu", "--no-slow"],
                 lambda line: "(best of" in line or line.startswith("  "))


# ---- the grpo.py runs
def grpo_run(run, engine):
    parallel, mode = run.split(":")
    out = work / f"run_{parallel}_{mode}_{engine}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time: grpo.py refuses a run folder with checkpoints
    script = [str(ROOT / "grpo.py")] if engine == "static" else [str(ROOT / "bench" / "gpu_check.py"),
                                                                 "--grpo-worker", engine]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *script,
           "--model", str(work / "policy"), "--data", str(work / "train.jsonl"), "--reward", mode,
           "--reward-model", str(work / "rm"), "--parallel", parallel, "--batch-size", str(args.batch_size),
           "--group-size", str(args.group_size), "--max-new-tokens", str(args.max_new_tokens),
           "--steps", str(args.steps), "--save-every", "0", "--keep", "1", "--dump-every", "0",
           "--prompt-format", "raw", "--lr", "1e-6", "--out", str(out)] + (["--proc-all"] if mode != "outcome" else [])
    if args.device == "cpu":
        cmd += ["--precision", "fp32"]
    cmd += shlex.split(args.grpo_args)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0" if args.device == "cuda" else "")
    print("\n$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env)
    wall = time.perf_counter() - t0
    label = f"{run} {engine}"
    if proc.returncode:
        return f"{label:<24} FAILED (exit {proc.returncode}) after {wall:.0f}s"
    with open(out / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f if line.strip()]
    timed = logged[1:] or logged  # the first step carries the warm-up (allocator, kernels, sandbox start)
    mean = lambda key: sum(m.get(key) or 0.0 for m in timed) / len(timed)
    peak = max(m.get("peak_mem_gib") or 0.0 for m in logged)
    return (f"{label:<24} step {mean('step_time'):6.2f}s (generate {mean('gen_time'):6.2f}, reward "
            f"{mean('reward_time'):5.2f}, update {mean('train_time'):5.2f})  {mean('tokens_per_s'):8.0f} tok/s  "
            f"completion {mean('completion_len'):5.0f} tok  peak {peak:5.1f} GiB  (whole run {wall:.0f}s)")


runs = [("fsdp:gated", "growing"), ("fsdp:gated", "static")] if args.all else [(r, args.engine) for r in args.runs]
rows = [grpo_run(run, engine) for run, engine in runs]
summary.append(f"grpo.py: policy {args.shape}, reward model {args.rm_shape}, {args.batch_size} completions x up to "
               f"{args.max_new_tokens} tokens, {torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}:")
summary += rows
print("\n==== summary\n" + "\n".join(summary))
