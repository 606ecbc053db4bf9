"""
Benchmark: seconds per GRPO step, grpo.py vs TRL 1.16's GRPOTrainer, on the same random-init model, the same
problems and the same batch (8 problems x 8 completions = 64 completions of up to 64 tokens), on CPU, side by side
in one run. Each trainer runs in its own process; a step is timed from one step's start to the next one's (so it
includes generation, reward, the update and the trainer's own overhead); the first --warmup steps are dropped.

    pip install trl==1.16.0          # bench-only dependency (not needed by grpo.py or the tests)
    python bench/bench_grpo.py                  # both, twice each (alternating), 8 timed steps after 2 warm-up
    python bench/bench_grpo.py --repeats 5 --steps 4    # finer alternation: fairer while other work loads the CPU
    python bench/bench_grpo.py --only grpo      # just grpo.py (no trl needed)
    python bench/bench_grpo.py --steps 16 --warmup 3
    python bench/bench_grpo.py --size small     # a 3.7M model: the model's arithmetic, the same in both, dominates

Both trainers get the same settings: fp32, gradient checkpointing off (grpo.py's CPU default; --grad-ckpt turns it
on in both, TRL's own default), one torch thread (--threads), on-policy (one update per batch), no KL (beta 0, no
reference model), the dapo loss with clip 0.2/0.28, temperature 1, lr 1e-5, and the same pure-Python reward (the
share of completion tokens with an even id: free to compute, and with spread inside groups, so every completion is
trained on). The model is random-init and rarely emits EOS, so nearly every completion runs
the full 64 tokens in both. Wall time and CPU time per step are both reported (on a shared machine the CPU time is
less disturbed by other processes), and grpo.py's step split into generation (rollout) and update (optimize).
Measured on the quiet 2-core CPU: grpo.py 0.192 s/step, TRL 0.475 s/step, 0.40x; with --grad-ckpt 0.49x
(bench/README.md has every setting).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# tiny: synth.tiny_model's default shape, where a step's time is mostly the trainers' own overhead (generation loop,
# bookkeeping); small: bench_generate.py's CPU model, where it is mostly the model's arithmetic, equal in both
SHAPES = {"tiny": dict(vocab=512), "small": dict(vocab=2048, hidden_size=256, intermediate_size=768,
                                                 num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)}
PROBLEMS, G, MAX_NEW_TOKENS, LR = 8, 8, 64, 1e-5


def even_share(token_ids):
    return sum(t % 2 == 0 for t in token_ids) / max(1, len(token_ids))


def step_times(starts):
    """(wall, CPU) seconds of each step: from one step's start to the next one's."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts, starts[1:])]


def make_world(workdir, size, seed):
    """A byte-level BPE tokenizer trained on Python source, a random-init Qwen2 and 8 short problems."""
    from synth import tiny_model, train_tiny_tokenizer
    corpus = [p.read_text(errors="replace") for p in sorted(Path(os.__file__).parent.glob("*.py"))[:60]]
    shape = dict(SHAPES[size])
    tokenizer = train_tiny_tokenizer(corpus, vocab_size=shape.pop("vocab"))
    model = tiny_model(tokenizer, "qwen2", seed=seed, initializer_range=0.02, **shape)
    model.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")
    prompts = [f"Write a Python function number {i} that returns the sum of a list of integers."
               for i in range(PROBLEMS)]
    with open(workdir / "problems.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            f.write(json.dumps({"task_id": f"b{i}", "prompt": prompt, "task": "bench"}) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    return f"random-init Qwen2 {n_params / 1e6:.1f}M params, vocab {len(tokenizer)}"


def run_grpo(workdir, steps, grad_ckpt):
    import grpo
    grpo.TASKS["bench"] = dict(format=lambda text: 0.0,
                               outcome=lambda args, problems, samples: [even_share(s.token_ids) for s in samples])
    starts = []
    step_problems = grpo.step_problems

    def timed_step_problems(*args, **kwargs):  # called once at the start of every step
        starts.append((time.perf_counter(), time.process_time()))
        return step_problems(*args, **kwargs)

    grpo.step_problems = timed_step_problems
    parts = {"generation": [], "update": []}  # where grpo.py's step goes: rollout() and optimize(), CPU seconds

    def timed(fn, name):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            result = fn(*args, **kwargs)
            parts[name].append(time.process_time() - start)
            return result
        return wrapper

    grpo.rollout, grpo.optimize = timed(grpo.rollout, "generation"), timed(grpo.optimize, "update")
    shutil.rmtree(workdir / "grpo_run", ignore_errors=True)  # a fresh run each repeat
    args = grpo.parse_args(["--model", str(workdir / "model"), "--data", str(workdir / "problems.jsonl"),
                            "--out", str(workdir / "grpo_run"), "--reward", "outcome", "--prompt-format", "raw",
                            "--batch-size", str(PROBLEMS * G), "--group-size", str(G),
                            "--max-new-tokens", str(MAX_NEW_TOKENS), "--steps", str(steps), "--lr", str(LR),
                            "--save-every", "0", "--dump-every", "0", "--keep", "1",
                            "--grad-ckpt" if grad_ckpt else "--no-grad-ckpt"])
    grpo.train(args)
    rows = [json.loads(line) for line in open(workdir / "grpo_run" / "metrics.jsonl")]
    return step_times(starts), [r["completion_len"] for r in rows], parts


def run_trl(workdir, steps, grad_ckpt):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    import trl
    assert trl.__version__ == "1.16.0", f"this benchmark compares with trl 1.16.0, found {trl.__version__}"

    tokenizer = PreTrainedTokenizerFast.from_pretrained(workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(workdir / "model", dtype=torch.float32)
    prompts = [json.loads(line)["prompt"] for line in open(workdir / "problems.jsonl")]
    lengths = []

    def reward(completions, completion_ids, **kwargs):
        lengths.append(sum(map(len, completion_ids)) / len(completion_ids))
        return [even_share(ids) for ids in completion_ids]

    starts = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            starts.append((time.perf_counter(), time.process_time()))

    config = GRPOConfig(output_dir=str(workdir / "trl_run"), per_device_train_batch_size=PROBLEMS * G,
                        num_generations=G, max_completion_length=MAX_NEW_TOKENS, gradient_accumulation_steps=1,
                        learning_rate=LR, max_steps=steps, logging_steps=1, report_to="none", save_strategy="no",
                        use_cpu=True, bf16=False, beta=0.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.28,
                        temperature=1.0, gradient_checkpointing=grad_ckpt, seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, processing_class=tokenizer,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), callbacks=[Timer()])
    trainer.train()
    return step_times(starts), lengths, {}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per trainer")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not timed")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each trainer, alternating")
    parser.add_argument("--only", choices=["grpo", "trl"], help="run one trainer only")
    parser.add_argument("--size", default="tiny", choices=list(SHAPES), help="the random-init model's shape")
    parser.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=False,
                        help="gradient checkpointing in both (default off: grpo.py's CPU default; TRL's is on)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in both (1: on a shared machine, a descheduled OpenMP thread stalls "
                             "every small matmul of the others)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, metavar=("TRAINER", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one trainer in a fresh process: neither sees the other's imports, threads or caches
        which, workdir = args.child[0], Path(args.child[1])
        import torch
        torch.set_num_threads(args.threads)
        # one step more than timed: a step's time runs to the next step's start (the last one ends in a save)
        times, lengths, parts = (run_grpo if which == "grpo" else run_trl)(workdir, args.warmup + args.steps + 1,
                                                                           args.grad_ckpt)
        print("RESULT " + json.dumps(dict(times=times, lengths=lengths, parts=parts)))
        return

    import torch
    print(vars(args))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        description = make_world(workdir, args.size, args.seed)
        print(f"model: {description}; batch: {PROBLEMS} problems x {G} = {PROBLEMS * G} completions of up to "
              f"{MAX_NEW_TOKENS} tokens; CPU, {args.threads} torch thread(s) of {os.cpu_count()} cores")
        times, lengths, parts = {}, {}, {}
        for _ in range(args.repeats):  # alternate, so that both see the same spells of load from other processes
            for which in ([args.only] if args.only else ["grpo", "trl"]):
                proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--warmup",
                                       str(args.warmup), "--threads", str(args.threads), "--child", which,
                                       str(workdir), "--grad-ckpt" if args.grad_ckpt else "--no-grad-ckpt"],
                                      capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode or not lines:
                    sys.exit(f"{which} failed:\n{proc.stderr[-4000:]}")
                result = json.loads(lines[-1][len("RESULT "):])
                times.setdefault(which, []).extend(result["times"][args.warmup:])
                lengths.setdefault(which, []).extend(result["lengths"])
                for name, seconds in result["parts"].items():
                    parts.setdefault(name, []).extend(seconds[args.warmup:])
        results, cpu = {}, {}
        for which, ts in times.items():
            wall = [t[0] for t in ts]
            results[which], cpu[which] = statistics.median(wall), statistics.median(t[1] for t in ts)
            print(f"{which:>5}: {results[which]:.3f} s/step median (min {min(wall):.3f}, max {max(wall):.3f}) over "
                  f"{len(ts)} steps, CPU time {cpu[which]:.3f} s/step; mean completion length "
                  f"{statistics.mean(lengths[which]):.1f} tokens")
        if parts:
            print("grpo.py's step, CPU time (median): " + ", ".join(
                f"{name} {statistics.median(seconds):.3f} s" for name, seconds in parts.items()))
        if len(results) == 2:
            print(f"grpo.py / TRL = {results['grpo'] / results['trl']:.2f}x the time per step "
                  f"({results['trl'] / results['grpo']:.1f}x faster); in CPU time "
                  f"{cpu['grpo'] / cpu['trl']:.2f}x (less sensitive to other processes on a shared machine)")


if __name__ == "__main__":
    main()
