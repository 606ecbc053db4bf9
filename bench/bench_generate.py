"""
Benchmark: the synth.py generation engine vs transformers' model.generate, on the same random-init model, prompts and
sampling settings, side by side in one run. Prints generated tokens/s for each and the ratios. The engine runs in
several modes: its default (on a GPU the static decode step with CUDA graphs; on a CPU the static step when the
prompts are at least as long as the completions, else the growing cache), on a GPU also without graphs, on a CPU
with static=True, with static=False (the written-out step over a growing cache) and with fast=False (the model's own
forward at every step).

    python bench/bench_generate.py                        # CPU: random-init ~4M Qwen2, 64 prompts x 8 x 128 tokens
    python bench/bench_generate.py --prompt-tokens 16 64  # shorter prompts (less prefill for model.generate to redo)
    python bench/bench_generate.py --top-p 0.95           # nucleus sampling in both
    python bench/bench_generate.py --shape tiny --prompts 8 --max-new-tokens 64 --prompt-tokens 16 24 --repeats 5
                                                          # bench_grpo.py's setting: synth.tiny_model's 2-layer shape,
                                                          # where a step is mostly fixed per-call overhead
    python bench/bench_generate.py --gpu                  # bf16 on a GPU, three workloads (GPU_WORKLOADS): Qwen2.5-1.5B
                                                          # shape 64 prompts x 8 x 256; Qwen2.5-Coder-7B shape 1 x 1 x
                                                          # 256 and 4 x 16 x 256; with the share of memory bandwidth

Prompts are windows of Python standard-library source (a code-like text, present wherever Python is), cut to a
random length in --prompt-tokens, tokenized by a byte-level BPE tokenizer trained on that source. The models are
random-init, so they rarely emit EOS: nearly every row runs the full --max-new-tokens in every engine.
"""

import argparse
import gc
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth import eos_token_ids, generate, tiny_model, train_tiny_tokenizer  # noqa: E402

# config.json shapes of the real models, built here with random weights: no download
QWEN25_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                  tie_word_embeddings=True)
QWEN25_CODER_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
                       tie_word_embeddings=False)
TINY_QWEN2 = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2)
GPU_WORKLOADS = [("Qwen2.5-1.5B", QWEN25_15B, 64, 8), ("Qwen2.5-Coder-7B", QWEN25_CODER_7B, 1, 1),
                 ("Qwen2.5-Coder-7B", QWEN25_CODER_7B, 4, 16)]  # (name, shape, prompts, samples per prompt)
# peak HBM bandwidth in bytes/s, from the vendors' data sheets; the first name found in the device name wins
PEAK_BANDWIDTH = [("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12), ("A100-SXM4-80GB", 2.04e12),
                  ("A100", 1.555e12), ("L40S", 0.864e12), ("A10G", 0.6e12), ("RTX 4090", 1.008e12)]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--gpu", action="store_true", help="bf16 on cuda, the GPU_WORKLOADS (--max-new-tokens 256)")
parser.add_argument("--shape", choices=["cpu", "tiny"], default="cpu",
                    help="on CPU: a 4-layer 4M model, or synth.tiny_model's default 2-layer shape")
parser.add_argument("--prompts", type=int, default=64)
parser.add_argument("-n", type=int, default=8, help="samples per prompt")
parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128 on CPU, 256 with --gpu")
parser.add_argument("--temperature", type=float, default=1.0)
parser.add_argument("--top-p", type=float, default=1.0)
parser.add_argument("--top-k", type=int, default=0)
parser.add_argument("--prompt-tokens", type=int, nargs=2, default=[64, 256], metavar=("MIN", "MAX"))
parser.add_argument("--repeats", type=int, default=1, help="timed runs of each engine, alternating")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's choice). 1 by default: a 4M-parameter model gains nothing "
                         "from more, and on a busy machine their spin-waits swamp both engines")
parser.add_argument("--peak-bandwidth", type=float, default=None, help="GB/s, when the device is not in the table")
parser.add_argument("--no-slow", action="store_true", help="skip the fast=False engine (the slowest on a GPU)")
args = parser.parse_args()
args.max_new_tokens = args.max_new_tokens or (256 if args.gpu else 128)
print(vars(args))

device = torch.device("cuda" if args.gpu else "cpu")
if args.threads:
    torch.set_num_threads(args.threads)
if args.gpu and not torch.cuda.is_available():
    raise SystemExit("error: --gpu needs a CUDA device")
dtype = torch.bfloat16 if args.gpu else torch.float32
device_name = torch.cuda.get_device_name() if args.gpu else "CPU"
peak = args.peak_bandwidth * 1e9 if args.peak_bandwidth else next(
    (bw for name, bw in PEAK_BANDWIDTH if args.gpu and name in device_name), None)

# ---- tokenizer, prompts
source_dir = Path(os.__file__).parent
corpus = [p.read_text(errors="replace") for p in sorted(source_dir.glob("*.py"))[:120]]
tokenizer = train_tiny_tokenizer(corpus, vocab_size=4096)
corpus_ids = tokenizer("".join(corpus[:40]))["input_ids"]
sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)


def make_prompts(count):
    rng = random.Random(args.seed)
    prompts = []
    for _ in range(count):
        length = rng.randint(*args.prompt_tokens)
        start = rng.randrange(len(corpus_ids) - length)
        prompts.append(tokenizer.decode(corpus_ids[start:start + length]))
    return prompts


def engine(**options):
    def run(model, prompts, n, max_new_tokens):
        samples = generate(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, seed=args.seed,
                           **options, **sampling)
        return sum(len(s.token_ids) for s in samples), samples
    return run


def hf_generate(model, prompts, n, max_new_tokens):
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    torch.manual_seed(args.seed)
    out = model.generate(**batch, do_sample=True, num_return_sequences=n, max_new_tokens=max_new_tokens,
                         **sampling).tolist()  # tolist waits for the device
    eos = set(eos_token_ids(model, tokenizer))
    n_tokens = 0
    for row in out:  # count up to and including the first EOS, as the engine does; the rest is padding
        completion = row[batch["input_ids"].shape[1]:]
        n_tokens += next((k + 1 for k, t in enumerate(completion) if t in eos), len(completion))
    return n_tokens, None


ENGINES = {"engine": engine()}  # the default: static on a GPU; on a CPU static only with prompts >= new tokens
ENGINES["engine, no graphs" if args.gpu else "engine, static=True"] = engine(
    **(dict(cuda_graphs=False) if args.gpu else dict(static=True)))
ENGINES["engine, static=False"] = engine(static=False)
if not args.no_slow:
    ENGINES["engine, fast=False"] = engine(fast=False)
ENGINES["model.generate"] = hf_generate


def memory_traffic(model, prompt_lengths, samples):
    """Bytes a decode step must read, summed over the run's steps: every weight once, plus the KV cache of each live
    row's context (its padded prompt and what it generated so far). The same workload for every engine; the
    engine's shared prompt cache reads less than this, so the share of peak is that of an unshared cache."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_bytes_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype.itemsize
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    steps = max(len(s.token_ids) for s in samples)
    padded_prompt = max(prompt_lengths)
    kv_bytes = sum(kv_bytes_per_token * (padded_prompt + t) for s in samples for t in range(len(s.token_ids)))
    return steps * weight_bytes + kv_bytes, steps, weight_bytes, kv_bytes


def timed(fn, model, prompts, n, max_new_tokens):
    if args.gpu:
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    n_tokens, samples = fn(model, prompts, n, max_new_tokens)
    if args.gpu:
        torch.cuda.synchronize()
    return n_tokens, time.perf_counter() - start, time.process_time() - start_cpu, samples


def bench(label, shape, n_prompts, n):
    prompts = make_prompts(n_prompts)
    prompt_lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    with torch.device(device):
        model = tiny_model(tokenizer, "qwen2", seed=args.seed, dtype=dtype, initializer_range=0.02, **shape)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n== {label}: random-init Qwen2, {n_params / 1e6:.1f}M params, {dtype}, {device_name}"
          + ("" if args.gpu else f", {torch.get_num_threads()} threads")
          + f"; {len(prompts)} prompts of {min(prompt_lengths)}-{max(prompt_lengths)} tokens "
            f"(mean {sum(prompt_lengths) / len(prompts):.0f}) x {n} samples x {args.max_new_tokens} new tokens")
    for fn in ENGINES.values():  # warm-up: first-call allocations, kernel selection
        fn(model, prompts[:2], 2, 8)
    results = {name: [] for name in ENGINES}
    for _ in range(args.repeats):
        for name, fn in ENGINES.items():
            n_tokens, seconds, cpu_seconds, samples = timed(fn, model, prompts, n, args.max_new_tokens)
            results[name].append((n_tokens, seconds, samples))
            # on a shared machine the CPU time (this process, all its threads) is the steadier of the two numbers
            print(f"{name:>22}: {n_tokens} tokens in {seconds:.2f}s = {n_tokens / seconds:,.0f} tokens/s "
                  f"(CPU time {cpu_seconds:.2f}s)", flush=True)
    best = {name: max(runs, key=lambda r: r[0] / r[1]) for name, runs in results.items()}
    traffic, steps, weight_bytes, kv_bytes = memory_traffic(model, prompt_lengths, best["engine"][2])
    print(f"memory traffic per run: {steps} decode steps x {weight_bytes / 1e9:.3f} GB of weights + "
          f"{kv_bytes / 1e9:.2f} GB of KV reads (a lower bound on each run's time: it also covers prefill, sampling)")
    reference = best["model.generate"][0] / best["model.generate"][1]
    summary = []
    for name, (n_tokens, seconds, _) in best.items():
        share = f", {100 * traffic / seconds / peak:.1f}% of {peak / 1e12:.2f} TB/s" if peak else ""
        summary.append(f"{name}: {n_tokens / seconds:,.0f} tok/s ({n_tokens / seconds / reference:.2f}x "
                       f"model.generate; {traffic / seconds / 1e9:,.0f} GB/s{share})")
    print(f"{label} {len(prompts)}x{n}x{args.max_new_tokens} (best of {args.repeats}):\n  " + "\n  ".join(summary))
    if not peak and args.gpu:
        print("  (pass --peak-bandwidth GB/s for the share of peak)")
    del model
    gc.collect()
    if args.gpu:
        torch.cuda.empty_cache()
    return summary


workloads = GPU_WORKLOADS if args.gpu else [("cpu" if args.shape == "cpu" else "tiny",
                                             dict(TINY_QWEN2 if args.shape == "cpu" else {},
                                                  vocab_size=len(tokenizer)), args.prompts, args.n)]
for workload in workloads:
    bench(*workload)
