"""
Benchmark: the synth.py generation engine vs transformers' model.generate, on the same random-init model, prompts and
sampling settings, side by side in one run. Prints generated tokens/s for each and the ratio. The engine runs twice:
with its fast decode step (the default) and with fast=False (the model's own forward at every step), which shows
what the written-out step is worth.

    python bench/bench_generate.py                        # CPU: random-init ~4M Qwen2, 64 prompts x 8 x 128 tokens
    python bench/bench_generate.py --prompt-tokens 16 64  # shorter prompts (less prefill for model.generate to redo)
    python bench/bench_generate.py --top-p 0.95           # nucleus sampling in both
    python bench/bench_generate.py --shape tiny --prompts 8 --max-new-tokens 64 --prompt-tokens 16 24 --repeats 5
                                                          # bench_grpo.py's setting: synth.tiny_model's 2-layer shape,
                                                          # where a step is mostly fixed per-call overhead
    python bench/bench_generate.py --gpu                  # random-init Qwen2.5-1.5B config, bf16, GPU; also the share
                                                          # of the GPU's memory bandwidth the engine reaches

Prompts are windows of Python standard-library source (a code-like text, present wherever Python is), cut to a
random length in --prompt-tokens, tokenized by a byte-level BPE tokenizer trained on that source. The models are
random-init, so they rarely emit EOS: nearly every row runs the full --max-new-tokens in both engines.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth import eos_token_ids, generate, tiny_model, train_tiny_tokenizer  # noqa: E402

# Qwen2.5-1.5B's shape (its config.json), built here with random weights: no download
QWEN25_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                  tie_word_embeddings=True)
TINY_QWEN2 = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2)
# peak HBM bandwidth in bytes/s, from the vendors' data sheets; the first name found in the device name wins
PEAK_BANDWIDTH = [("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12), ("A100-SXM4-80GB", 2.04e12),
                  ("A100", 1.555e12), ("L40S", 0.864e12), ("A10G", 0.6e12), ("RTX 4090", 1.008e12)]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--gpu", action="store_true", help="Qwen2.5-1.5B config, bf16, cuda")
parser.add_argument("--shape", choices=["cpu", "tiny"], default="cpu",
                    help="on CPU: a 4-layer 4M model, or synth.tiny_model's default 2-layer shape")
parser.add_argument("--prompts", type=int, default=64)
parser.add_argument("-n", type=int, default=8, help="samples per prompt")
parser.add_argument("--max-new-tokens", type=int, default=128)
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
args = parser.parse_args()
print(vars(args))

device = torch.device("cuda" if args.gpu else "cpu")
if args.threads:
    torch.set_num_threads(args.threads)
if args.gpu and not torch.cuda.is_available():
    raise SystemExit("error: --gpu needs a CUDA device")
dtype = torch.bfloat16 if args.gpu else torch.float32

# ---- tokenizer, prompts, model
source_dir = Path(os.__file__).parent
corpus = [p.read_text(errors="replace") for p in sorted(source_dir.glob("*.py"))[:120]]
tokenizer = train_tiny_tokenizer(corpus, vocab_size=4096)
rng = random.Random(args.seed)
corpus_ids = tokenizer("".join(corpus[:40]))["input_ids"]
prompts = []
for _ in range(args.prompts):
    length = rng.randint(*args.prompt_tokens)
    start = rng.randrange(len(corpus_ids) - length)
    prompts.append(tokenizer.decode(corpus_ids[start:start + length]))
prompt_lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
print(f"tokenizer: {len(tokenizer)} tokens; prompts: {len(prompts)}, {min(prompt_lengths)}-{max(prompt_lengths)} "
      f"tokens (mean {sum(prompt_lengths) / len(prompts):.0f})")

shape = QWEN25_15B if args.gpu else dict(TINY_QWEN2 if args.shape == "cpu" else {}, vocab_size=len(tokenizer))
with torch.device(device):
    model = tiny_model(tokenizer, "qwen2", seed=args.seed, dtype=dtype, initializer_range=0.02, **shape)
n_params = sum(p.numel() for p in model.parameters())
print(f"model: random-init Qwen2, {n_params / 1e6:.1f}M params, {dtype}, {device}"
      + (f" ({torch.cuda.get_device_name()})" if args.gpu else f", {torch.get_num_threads()} threads"))
sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
eos = set(eos_token_ids(model, tokenizer))


def run_engine(prompts, n, max_new_tokens, fast=True):
    samples = generate(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, seed=args.seed, fast=fast,
                       **sampling)
    return sum(len(s.token_ids) for s in samples), samples


def run_engine_forward(prompts, n, max_new_tokens):
    return run_engine(prompts, n, max_new_tokens, fast=False)


def run_hf_generate(prompts, n, max_new_tokens):
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    torch.manual_seed(args.seed)
    out = model.generate(**batch, do_sample=True, num_return_sequences=n, max_new_tokens=max_new_tokens,
                         **sampling).tolist()  # tolist waits for the device
    n_tokens = 0
    for row in out:  # count up to and including the first EOS, as the engine does; the rest is padding
        completion = row[batch["input_ids"].shape[1]:]
        n_tokens += next((k + 1 for k, t in enumerate(completion) if t in eos), len(completion))
    return n_tokens, None


def timed(fn):
    if args.gpu:
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    n_tokens, samples = fn(prompts, args.n, args.max_new_tokens)
    if args.gpu:
        torch.cuda.synchronize()
    return n_tokens, time.perf_counter() - start, time.process_time() - start_cpu, samples


# ---- warm up both (first-call allocations, kernel selection), then alternate timed runs
engines = {"engine": run_engine, "engine, fast=False": run_engine_forward, "model.generate": run_hf_generate}
for fn in engines.values():
    fn(prompts[:2], 2, 8)
results = {name: [] for name in engines}
for repeat in range(args.repeats):
    for name, fn in engines.items():
        n_tokens, seconds, cpu_seconds, samples = timed(fn)
        results[name].append((n_tokens, seconds, samples))
        # on a shared machine the CPU time (this process, all its threads) is the steadier of the two numbers
        print(f"{name:>18}: {n_tokens} tokens in {seconds:.2f}s = {n_tokens / seconds:,.0f} tokens/s "
              f"(CPU time {cpu_seconds:.2f}s)")

best = {name: max(n / s for n, s, _ in runs) for name, runs in results.items()}
print(f"ratio engine / model.generate: {best['engine'] / best['model.generate']:.2f}x; with fast=False "
      f"{best['engine, fast=False'] / best['model.generate']:.2f}x ({len(prompts)} prompts x {args.n} samples x "
      f"{args.max_new_tokens} new tokens, {sampling}, best of {args.repeats})")

# ---- memory traffic of the engine's best run. Decode is bound by memory bandwidth: each step reads every weight once
# plus the KV cache of the live rows. On a GPU the share of the peak says how far from the hardware limit we are.
n_tokens, seconds, samples = max(results["engine"], key=lambda r: r[0] / r[1])
config = model.config
head_dim = config.hidden_size // config.num_attention_heads
kv_bytes_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype.itemsize
weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
padded_prompt = max(prompt_lengths)
steps = max(len(s.token_ids) for s in samples)
# each row reads its padded prompt plus what it generated so far, until it finishes
kv_bytes = sum(kv_bytes_per_token * (padded_prompt + t) for s in samples for t in range(len(s.token_ids)))
bandwidth = (steps * weight_bytes + kv_bytes) / seconds
device_name = torch.cuda.get_device_name() if args.gpu else "CPU"
peak = args.peak_bandwidth * 1e9 if args.peak_bandwidth else next(
    (bw for name, bw in PEAK_BANDWIDTH if args.gpu and name in device_name), None)
print(f"engine memory traffic: {steps} decode steps x {weight_bytes / 1e9:.3f} GB of weights + {kv_bytes / 1e9:.2f} GB "
      f"of KV reads in {seconds:.2f}s = {bandwidth / 1e9:,.1f} GB/s"
      + (f" = {100 * bandwidth / peak:.1f}% of {device_name}'s {peak / 1e12:.2f} TB/s peak" if peak else
         " (pass --peak-bandwidth GB/s for the share of peak)")
      + "; a lower bound, the time also covers prefill and sampling")
