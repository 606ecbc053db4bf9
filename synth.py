"""
synth.py: everything a stage reads or samples. Model loading and the generation engine; problem files and benchmark
loaders; the ReCode output format (prompts, completions, code and answer extraction) and the answer checks; sampling
a benchmark into a samples file; the reward model's data (CRPL variants, LCB-RB pairs); the toy tasks and toy teacher
of grpo.py's CPU toy world.

The engine (`generate`) is a hand-written batched KV-cache loop: one prefill per distinct prompt; for plain decoders
(llama, qwen2, qwen3, mistral) a decode step written out from the weights at static shapes (StaticDecoder: the
prompt's KV stored once and read by its n samples, completion KV preallocated, a fixed batch and attention window
per step), replayed as CUDA graphs on a GPU; other models run their own forward over a preallocated cache; seeded
sampling on the device, which the host reads only every `sync_every` steps; lockstep decoding across ranks for
FSDP. Each Sample carries the log-probs grpo.py trains on.

    python synth.py generate --model Qwen/Qwen2.5-Coder-1.5B-Instruct --prompt "Reverse a list in Python." -n 4
    python synth.py generate --model PATH --prompt "def fib(n):" --raw --temperature 0 --max-new-tokens 64
    python synth.py crpl --problems problems.jsonl --teacher http://localhost:8000/v1 --teacher-model NAME \\
        --out crpl.jsonl        # any OpenAI-compatible server (vllm serve, an API: key in $OPENAI_API_KEY)
    python synth.py crpl --problems problems.jsonl --teacher local:PATH --out crpl.jsonl   # a model loaded here
    python synth.py crpl --problems problems.jsonl --teacher toy --out crpl.jsonl          # rule-based, CPU
    python synth.py lcb-rb --data lcb.jsonl --model PATH -n 16 --out lcb_rb.jsonl
    python synth.py lcb-rb --data lcb.jsonl --samples samples.jsonl --judge http://localhost:8000/v1 \\
        --teacher-model NAME --out lcb_rb.jsonl

CRPL: a teacher rewrites each problem's reasoning into an optimized variant and a degraded one (along one of the
paper's three dimensions); the original's and the optimized code must pass the problem's tests (math: reach the gold
answer), a copy of the original is no variant, every drop is counted, and a rerun resumes. LCB-RB: chosen reasoning
behind code that passes, rejected behind code that fails, optionally judged. File formats: README.md. Tests, bench:
    python -m pytest -q tests/test_synth.py tests/test_engine.py tests/test_toy.py;  python bench/bench_generate.py
    python bench/gpu_check.py --all    # on a GPU: CUDA graphs against the eager step, and every GPU figure
"""

import argparse
import ast
import base64
import difflib
import email.utils
import functools
import gzip
import hashlib
import http.client
import importlib.util
import inspect
import io
import itertools
import json
import math
import os
import pickle
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.cache_utils import DynamicCache, DynamicLayer

import execute
from execute import run_jobs, validate_job

TASKS = ("code", "math")  # the task types a problem file may hold; grpo.py gives each its R_fmt and R_out
CRPL_PAIRS = [("optimized", "original"), ("original", "degraded"), ("optimized", "degraded")]  # chosen > rejected

# -----------------------------------------------------------------------------
# Model loading

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}


def load_model(name_or_path, dtype=None, device=None, trust_remote_code=False):
    """Any causal LM transformers can load, from a hub id or a local directory. Defaults: bf16 on GPU, fp32 on CPU."""
    if device is None:  # under torchrun each rank takes its own GPU
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{dtype}', expected one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        if os.path.isdir(name_or_path):
            raise  # a local directory with missing or broken files: transformers' message names the file
        raise OSError(
            f"could not load model '{name_or_path}': it is not a local directory and the Hugging Face hub could not "
            f"provide it (offline, or no such repository). Download it where there is network "
            f"(`huggingface-cli download {name_or_path} --local-dir DIR`) and pass `--model DIR` (--model PATH); "
            f"set HF_HUB_OFFLINE=1 to fail fast without network. Cause: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"load_model: {name_or_path}: {type(model).__name__}, {n_params / 1e6:.1f}M params, {dtype}, {device}, "
          f"prompt format: {'chat template' if tokenizer.chat_template else 'plain text'}")
    return model, tokenizer


_formats_announced = set()


def format_prompt(tokenizer, user, system=None):
    """The tokenizer's chat template (system + user, generation prompt added) when it has one, else plain text."""
    use_template = bool(tokenizer.chat_template)
    if tokenizer.name_or_path not in _formats_announced:  # say once per tokenizer which format the prompts get
        _formats_announced.add(tokenizer.name_or_path)
        print(f"format_prompt: {'chat template' if use_template else 'plain text (tokenizer has no chat template)'}"
              f" for tokenizer '{tokenizer.name_or_path}'")
    if not use_template:
        return f"{system}\n\n{user}" if system else user
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# -----------------------------------------------------------------------------
# The generation engine

@dataclass
class Sample:
    prompt_index: int
    text: str                  # completion text, without the EOS token and without the stop string
    token_ids: list            # completion tokens, including the EOS token or the token that completed the stop string
    logprobs: list             # log_softmax(logits / T)[token] per token (raw logits when T == 0)
    finish_reason: str         # "eos" | "stop" | "length" | "early" (generate's finish_share)
    prompt_token_ids: list


class PreallocatedLayer(DynamicLayer):
    """A full-attention KV layer written in place into buffers sized for prompt + completion. DynamicLayer
    concatenates, which copies the whole cache at every step; this returns views of the filled part instead, so the
    rest of transformers (mask sizes, sequence length) sees an ordinary dynamic layer."""

    def __init__(self, capacity):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states, value_states):
        super().lazy_initialization(key_states, value_states)
        rows, heads = key_states.shape[:2]
        self.key_buffer = key_states.new_empty(rows, heads, self.capacity, key_states.shape[-1])
        self.value_buffer = value_states.new_empty(rows, heads, self.capacity, value_states.shape[-1])

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices):
        """Gather rows (repeats allowed): replicates a prompt's cache to its samples, drops finished rows."""
        length = self.get_seq_length()
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            new = old.new_empty((len(indices),) + old.shape[1:])
            new[:, :, :length] = old[indices, :, :length]  # only the filled part: the tail holds nothing yet
            setattr(self, name, new)
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]


def new_cache(model, capacity):
    cache = DynamicCache(config=model.config)
    # sliding-window or linear-attention layers keep transformers' own bookkeeping; only full attention is preallocated
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    if not cache.layers:
        cache.layer_class_to_replicate = functools.partial(PreallocatedLayer, capacity)
    return cache


# Decoder families whose layers are exactly: RMSNorm, attention (q/k/v/o projections, rotary embeddings, optional
# q/k RMSNorm, grouped-query heads), RMSNorm, gated MLP. Their one-token decode step is written out below.
PLAIN_DECODERS = {"llama", "qwen2", "qwen3", "mistral"}


def rms_norm(norm, x):
    # transformers' formula, op for op
    normed = x.float()
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * normed.to(x.dtype)


def rotary_tables(model, capacity):
    """cos and sin of every position, made by the model's own rotary module (so any rope scaling is honoured), with
    rotate_half's sign folded into sin: rope(x) = x * cos + x.roll(half) * sin, three kernels instead of six."""
    embed = model.get_input_embeddings().weight
    cos, sin = (t[0] for t in model.model.rotary_emb(embed[:1], torch.arange(capacity, device=embed.device)[None]))
    half = sin.shape[-1] // 2
    return cos, torch.cat((-sin[:, :half], sin[:, half:]), -1)


def runs_written_out(model):
    """Whether a decode step of this model can be written out from its weights: a plain decoder (PLAIN_DECODERS) with
    ordinary linear and embedding layers, full rotary embeddings and no hook that could change its computation."""
    if model.config.model_type not in PLAIN_DECODERS:
        return False
    inner = model.model
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    # FSDP's own hooks only gather and free the weights: with the whole model gathered for decoding (grpo.py does
    # that), they have nothing to do and the step can run from the gathered weights. Any other hook (offloading,
    # adapters, a user's) may change the computation, so the model's forward runs.
    foreign_hooks = [hook for m in model.modules() for hook in [*m._forward_hooks.values(),
                                                                 *m._forward_pre_hooks.values()]
                     if not type(getattr(hook, "__self__", None)).__module__.startswith("torch.distributed.fsdp")]
    if (type(head) is not nn.Linear or type(embed) is not nn.Embedding or foreign_hooks
            or getattr(model.config, "final_logit_softcapping", None)
            or any(isinstance(p, DTensor) for p in model.parameters())):  # still sharded: each forward gathers
        return False
    projections = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
    if any(type(getattr(getattr(layer, block), name)) is not nn.Linear
           for layer in inner.layers for block, names in projections.items() for name in names):
        return False  # quantized or otherwise custom layers: the model's own forward knows how to run them
    # partial rotary is not these families' layout
    return rotary_tables(model, 1)[0].shape[-1] == inner.layers[0].self_attn.head_dim


def written_out_step(model, capacity, attend):
    """step(tokens, positions, context) -> next-token logits: one decode step of a runs_written_out model straight from
    its weights, positions < capacity. The model's own forward spends most of a small step in Python: module calls,
    output records, mask and rotary tables rebuilt per call. Here the rotary tables are built once and each step is
    the bare tensor ops. attend(layer index, q, k, v, context) -> (rows, heads * head_dim) stores the keys and values
    and attends; q (rows, heads, head_dim) comes rotated and already scaled, k and v are (rows, kv heads, head_dim)."""
    inner = model.model
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    cos_table, sin_table = rotary_tables(model, capacity)
    scaling = inner.layers[0].self_attn.scaling  # folded into the queries' rotation: one kernel less per layer
    half = cos_table.shape[-1] // 2

    def step(tokens, position, context):
        x = F.embedding(tokens, embed.weight)
        cos, sin = cos_table[position][:, None], sin_table[position][:, None]  # (rows, 1, head_dim)
        q_cos, q_sin = cos * scaling, sin * scaling
        for index, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = rms_norm(layer.input_layernorm, x)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).unflatten(-1, (-1, attn.head_dim))
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).unflatten(-1, (-1, attn.head_dim))
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).unflatten(-1, (-1, attn.head_dim))
            if hasattr(attn, "q_norm"):  # qwen3
                q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
            k = torch.addcmul(k * cos, k.roll(half, -1), sin)
            q = torch.addcmul(q * q_cos, q.roll(half, -1), q_sin)
            x = x + F.linear(attend(index, q, k, v, context), attn.o_proj.weight, attn.o_proj.bias)
            h = rms_norm(layer.post_attention_layernorm, x)
            gate = mlp.act_fn(F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias))
            x = x + F.linear(gate * F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias), mlp.down_proj.weight,
                             mlp.down_proj.bias)
        return F.linear(rms_norm(inner.norm, x), head.weight, head.bias)

    return step


def fast_decode_step(model, cache, capacity):
    """A function (tokens, positions, attention mask) -> next-token logits that runs written_out_step over the
    growing preallocated cache (generate's static=False path); None for a model that is not runs_written_out. The
    result equals the model's forward up to float rounding (tests: 1e-5 in fp32). Attention is transformers' eager
    formula (softmax in fp32); the grouped-query heads are a view, not a copy."""
    if not runs_written_out(model) or not all(isinstance(layer, PreallocatedLayer) for layer in cache.layers):
        return None

    def attend(index, q, k, v, bias):
        keys, values = cache.layers[index].update(k[:, :, None], v[:, :, None])  # (rows, kv heads, keys, head_dim)
        q = q.unflatten(1, (keys.shape[1], -1))  # query head i reads kv head i // (heads per kv head)
        probs = (torch.matmul(q, keys.transpose(2, 3)) + bias).softmax(-1, dtype=torch.float32).to(values.dtype)
        return torch.matmul(probs, values).flatten(1)

    step = written_out_step(model, capacity, attend)
    scores_dtype = model.get_input_embeddings().weight.dtype

    def masked_step(tokens, position, attention):
        # the left padding as an additive bias (rows, kv heads, heads per kv head, keys): a third of masked_fill's time
        bias = torch.zeros(attention.shape, dtype=scores_dtype, device=attention.device)
        return step(tokens, position, bias.masked_fill_(~attention, float("-inf"))[:, None, None, :])

    return masked_step


# The decode windows of StaticDecoder: LENGTH_BUCKET_MIN columns, doubling up to LENGTH_BUCKET_STRIDE, then growing by
# LENGTH_BUCKET_STRIDE. Each window is one graph per batch bucket; a step reads at most 2x (short) or
# LENGTH_BUCKET_STRIDE columns (long) more keys than it needs, and a 4K completion visits 11 windows.
LENGTH_BUCKET_MIN = 64
LENGTH_BUCKET_STRIDE = 512


def decode_window(column, columns):
    """How many decode-cache columns the step that writes `column` attends to (of `columns` in all)."""
    window = LENGTH_BUCKET_MIN
    while window <= column and window < LENGTH_BUCKET_STRIDE:
        window *= 2
    if window <= column:
        window = (column // LENGTH_BUCKET_STRIDE + 1) * LENGTH_BUCKET_STRIDE
    return min(window, columns)


class StaticDecoder:
    """The decode step of a runs_written_out model at shapes that do not change from step to step, so that a CUDA
    graph of it can be captured once and replayed.

    The rows form groups of n (the samples of one prompt); the prompt's keys and values are stored once per group and
    read by all n rows (one batched matmul per layer for the whole group), the completions' keys and values per row in
    buffers of every column a completion can reach. A step attends to the group's prompt (its left padding masked)
    and to a fixed window of the decode columns (decode_window; the columns after the step's own are masked). The
    step's column and the rows' positions are device tensors, so a step's shapes depend only on the number of groups
    and the window. Rows that finish stay in the batch (their tokens are dropped); `select_groups` shrinks the batch,
    which generate() does only when the groups still running fit a power of two below the current size.

    CUDA graphs: torch.cuda.CUDAGraph, one per (batch size, window), captured at first use and replayed with the
    static buffers (tokens, step column) refilled in place. Not torch.compile: a graph replays exactly the eager
    kernels, so graph and eager give the same tokens bit for bit, and there is no compile time or recompiling per
    shape. Sampling stays outside the graph: it is a few kernels, and a seeded generator inside a graph needs its
    state registered with every graph."""

    def __init__(self, model, prompt_cache, prompt_mask, first_position, n, columns, cuda_graphs):
        """prompt_cache: per layer (keys, values), each (groups, kv heads, prompt length, head dim); prompt_mask
        (groups, prompt length); first_position (groups * n,): the position of each row's first new token; columns:
        the decode steps to make room for."""
        keys = prompt_cache[0][0]
        groups, kv_heads, prompt_len, head_dim = keys.shape
        self.n, self.columns, self.cuda_graphs = n, columns, cuda_graphs
        self.prompt_keys, self.prompt_values = [k for k, _ in prompt_cache], [v for _, v in prompt_cache]
        rows = groups * n
        self.decode_keys = [keys.new_zeros(rows, kv_heads, columns, head_dim) for _ in prompt_cache]
        self.decode_values = [keys.new_zeros(rows, kv_heads, columns, head_dim) for _ in prompt_cache]
        bias = torch.zeros(prompt_mask.shape, dtype=keys.dtype, device=keys.device)
        self.prompt_bias = bias.masked_fill_(~prompt_mask, float("-inf")).repeat_interleave(n, 0)  # per row
        self.first_position = first_position
        self.tokens = torch.zeros(rows, dtype=torch.long, device=keys.device)
        self.column = torch.zeros(1, dtype=torch.long, device=keys.device)  # the decode column this step writes
        self.column_ids = torch.arange(columns, device=keys.device)
        self.step = written_out_step(model, prompt_len + columns + 1, self.attend)
        self.graphs, self.pool = {}, None

    @property
    def groups(self):
        return self.prompt_keys[0].shape[0]

    def attend(self, index, q, k, v, context):
        window, bias = context
        decode_keys, decode_values = self.decode_keys[index], self.decode_values[index]
        # under autocast the projections come in the autocast dtype and the cache keeps the prefill's
        decode_keys.index_copy_(2, self.column, k[:, :, None].to(decode_keys.dtype))
        decode_values.index_copy_(2, self.column, v[:, :, None].to(decode_values.dtype))
        prompt_keys, prompt_values = self.prompt_keys[index], self.prompt_values[index]
        groups, kv_heads, prompt_len, head_dim = prompt_keys.shape
        rows, n = q.shape[0], q.shape[0] // groups
        # query head i reads kv head i // (heads per kv head); the group's n rows share one matmul with its prompt
        q = q.view(rows, kv_heads, -1, head_dim)
        per_kv = q.shape[2]

        def by_group(t):  # (rows, kv heads, per kv, x) -> (groups, kv heads, n * per kv, x)
            return t.view(groups, n, kv_heads, per_kv, -1).transpose(1, 2).reshape(groups, kv_heads, n * per_kv, -1)

        def by_row(t):  # the inverse of by_group
            return t.view(groups, kv_heads, n, per_kv, -1).transpose(1, 2).reshape(rows, kv_heads, per_kv, -1)

        prompt_scores = by_row(torch.matmul(by_group(q), prompt_keys.transpose(2, 3)))
        decode_scores = torch.matmul(q, decode_keys[:, :, :window].transpose(2, 3))
        scores = torch.cat((prompt_scores, decode_scores), -1) + bias
        probs = scores.softmax(-1, dtype=torch.float32).to(decode_values.dtype)
        prompt_probs, decode_probs = probs.split((prompt_len, window), -1)
        out = by_row(torch.matmul(by_group(prompt_probs), prompt_values))
        return (out + torch.matmul(decode_probs, decode_values[:, :, :window])).flatten(1)

    def forward(self, window):
        decode_bias = torch.zeros(window, dtype=self.prompt_bias.dtype, device=self.column.device)
        decode_bias = decode_bias.masked_fill_(self.column_ids[:window] > self.column, float("-inf"))
        bias = torch.cat((self.prompt_bias, decode_bias.expand(self.prompt_bias.shape[0], window)), -1)
        return self.step(self.tokens, self.first_position + self.column, (window, bias[:, None, None, :]))

    def __call__(self, tokens, column):
        """Next-token logits of every row, given the tokens sampled last (written to decode column `column`)."""
        window = decode_window(column, self.columns)
        self.tokens.copy_(tokens)
        self.column.fill_(column)
        if not self.cuda_graphs:
            return self.forward(window)
        if window not in self.graphs:
            self.graphs[window] = self.capture(window)
        graph, logits = self.graphs[window]
        graph.replay()
        return logits

    def capture(self, window):
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()  # one memory pool for every graph: they never run at once
        # The warm-up sets cuBLAS and the allocator up outside the capture, and writes the same keys and values the
        # replay writes. Under the caller's autocast (fp32 weights, grpo.py's bf16 mode) it also fills autocast's
        # cache of bf16 weights, which the capture then reads instead of casting every weight at every step: those
        # copies live until the caller's autocast exits, after generate() and its graphs are gone.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.forward(window)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self.forward(window)
        return graph, logits

    def select_groups(self, index):
        """Keep only the groups at `index` (a device tensor), in that order; the graphs are captured again."""
        rows = (index[:, None] * self.n + torch.arange(self.n, device=index.device)).flatten()
        self.prompt_keys = [t[index] for t in self.prompt_keys]
        self.prompt_values = [t[index] for t in self.prompt_values]
        self.decode_keys = [t[rows] for t in self.decode_keys]
        self.decode_values = [t[rows] for t in self.decode_values]
        self.prompt_bias, self.first_position, self.tokens = self.prompt_bias[rows], self.first_position[rows], \
            self.tokens[rows]
        self.graphs.clear()
        return rows


def eos_token_ids(model, tokenizer):
    """Every id that ends a completion: models such as Qwen list several in generation_config."""
    ids = set()
    generation_config = getattr(model, "generation_config", None)
    for value in (getattr(generation_config, "eos_token_id", None), getattr(model.config, "eos_token_id", None),
                  tokenizer.eos_token_id):
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return sorted(ids)


def encode_prompt(tokenizer, text):
    # chat templates already put the BOS token into the text; adding special tokens again would double it
    has_bos = tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token)
    return tokenizer(text, add_special_tokens=not has_bos)["input_ids"]


def sample_next_token(logits, temperature, top_k, top_p, generator, draws=None):
    """One token per row, all on the logits' device. Returns (tokens, log-probs of those tokens). draws: (n, index):
    draw n uniform numbers and give batch row i number index[i], so that a row's draws do not depend on which other
    rows are still in the batch."""
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, logits.gather(-1, tokens[:, None]).squeeze(-1) - logits.logsumexp(-1)
    probs = (logits / temperature if temperature != 1 else logits).softmax(-1)
    candidates = probs
    if 0 < top_k < probs.shape[-1]:
        kth_best = probs.topk(top_k, dim=-1).values[:, -1:]
        candidates = candidates.masked_fill(candidates < kth_best, 0.0)
    if top_p < 1.0:
        sorted_probs, order = candidates.sort(dim=-1, descending=True)
        # drop a token once the tokens ranked above it hold top_p of the (top-k) mass; the best token always stays
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p * sorted_probs.sum(-1, keepdim=True)
        candidates = candidates.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    # Inverse CDF: one uniform number per row, scaled to the kept mass, so filtered tokens (zero width) never come out.
    # Unlike torch.multinomial it never makes the host wait for the device, and it costs one scan of the vocabulary.
    cdf = candidates.cumsum(-1)
    if draws is None:
        uniform = torch.rand((cdf.shape[0], 1), generator=generator, device=cdf.device)
    else:
        uniform = torch.rand((draws[0], 1), generator=generator, device=cdf.device)[draws[1]]
    uniform = uniform * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, uniform, right=True).squeeze(-1)
    # log_softmax(logits / T) at the chosen token, before top-k/top-p: the policy's own log-prob, as TRL computes it
    return tokens, probs.gather(-1, tokens[:, None]).squeeze(-1).log()


def find_stop(tokenizer, token_ids, stop, checked):
    """Smallest k > checked such that the text of token_ids[:k] contains a stop string, else None. Only tokens after
    `checked` are new; a window reaching back far enough to hold a whole stop string is decoded first (cheap), and
    the exact token is searched only when that window contains one."""
    margin = 4 * max(len(s) for s in stop) + 4  # a character is at most 4 byte-level tokens
    window = tokenizer.decode(token_ids[max(0, checked - margin):], skip_special_tokens=True)
    if not any(s in window for s in stop):
        return None
    for k in range(checked + 1, len(token_ids) + 1):
        if any(s in tokenizer.decode(token_ids[:k], skip_special_tokens=True) for s in stop):
            return k
    return None


def is_sharded(model):
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:
        return False
    return any(isinstance(module, (FSDPModule, FullyShardedDataParallel)) for module in model.modules())


@torch.inference_mode()  # not just no_grad: skipping autograd's version and view bookkeeping saves ~10% per step
def generate(model, tokenizer, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0, stop=(), seed=0,
             lockstep=None, sync_every=16, fast=True, static=None, cuda_graphs=True, finish_share=1.0, on_finish=None):
    """Sample n completions for each prompt (strings, already formatted). Returns len(prompts) * n Samples,
    prompt-major: sample j of prompt i at index i * n + j. Callers batch prompts to fit memory: the cache holds
    len(prompts) * n rows of max_new_tokens tokens, plus one copy per prompt of the longest prompt (static) or
    len(prompts) * n rows of (longest prompt + max_new_tokens) tokens (static=False).

    lockstep: every rank keeps calling forward (a dummy row once its own rows are done) until all ranks are done,
    which sharded weights (FSDP) need because each forward is a collective; None = on when the model is FSDP-sharded.
    sync_every: the host reads the device (finished rows, stop strings, the lockstep all-reduce) every this many steps.
    fast: decode steps of a plain decoder (llama, qwen2, qwen3, mistral) run written out from its weights; False, or
    any other model, calls the model's own forward at every step. Prefill always runs the model's forward.
    static: the written-out step at fixed shapes (StaticDecoder: one prompt cache per group of n samples, a fixed
    batch and attention window); False: over a cache that grows by a column per step, finished rows dropped at every
    sync; None: on a CUDA device, and on a CPU when the longest prompt has at least max_new_tokens tokens (there the
    shared prompt saves more than the static step's extra kernels per layer cost; with short prompts and a small
    model the growing cache is faster on a CPU). cuda_graphs: on a CUDA device, replay the static step as CUDA
    graphs (no effect on a CPU or without the static step).
    finish_share < 1: at the first sync point where at least this share of the rows has finished, end the others
    (finish_reason "early", no EOS): the long tail of a batch stops costing steps in which few rows still run.
    on_finish(index, sample): called at the sync point where row `index` (its place in the returned list) finishes,
    with its final Sample, so that a caller can score it while the other rows still decode; keep it quick (hand the
    work to a thread): the decode loop waits for it.
    """
    stop = (stop,) if isinstance(stop, str) else tuple(stop)  # stop="\n\n" must not become one stop per character
    if (n < 1 or max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or sync_every < 1
            or not 0 < finish_share <= 1):
        raise ValueError(f"bad sampling settings: n={n} max_new_tokens={max_new_tokens} temperature={temperature} "
                         f"top_p={top_p} top_k={top_k} sync_every={sync_every} finish_share={finish_share}")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module  # DDP's forward broadcasts buffers: a collective per step that ranks would not match
    if lockstep is None:
        lockstep = is_sharded(model)
    if lockstep and not dist.is_initialized():
        raise ValueError("lockstep generation needs torch.distributed to be initialised (run under torchrun)")
    if not prompts:
        if lockstep:
            raise ValueError("lockstep generation needs at least one prompt on every rank")
        return []
    was_training = model.training
    model.eval()  # no dropout while sampling; the caller's mode is restored below
    try:
        return _generate(model, tokenizer, list(prompts), n, max_new_tokens, temperature, top_p, top_k, stop, seed,
                         lockstep, sync_every, fast, static, cuda_graphs, finish_share, on_finish)
    finally:
        model.train(was_training)


def _generate(model, tokenizer, prompts, n, max_new_tokens, temperature, top_p, top_k, stop, seed, lockstep,
              sync_every, fast, static, cuda_graphs, finish_share, on_finish):
    device = next(model.parameters()).device
    forward_args = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in forward_args else "past_key_values"  # transformers renamed it in 5.x
    last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
    eos_ids = eos_token_ids(model, tokenizer)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]
    encoded = {p: encode_prompt(tokenizer, p) for p in dict.fromkeys(prompts)}  # a prompt repeated is encoded once
    for text, ids in encoded.items():
        if not ids:
            raise ValueError(f"prompt {prompts.index(text)} encodes to no tokens")
    prompt_ids = [encoded[p] for p in prompts]
    prompt_len = max(len(ids) for ids in encoded.values())
    distinct_index = {p: i for i, p in enumerate(encoded)}
    groups = torch.tensor([distinct_index[p] for p in prompts], device=device)  # the distinct prompt of each group
    source = groups.repeat_interleave(n)  # ... and of each row: row r is sample r % n of prompt r // n
    if static is None:
        static = device.type == "cuda" or prompt_len >= max_new_tokens
    static = static and fast and runs_written_out(model) and all(
        isinstance(layer, PreallocatedLayer) for layer in new_cache(model, 1).layers)
    # static: the prefill cache holds the prompts only, and becomes StaticDecoder's shared prompt cache
    cache = new_cache(model, prompt_len if static else prompt_len + max_new_tokens)
    logits, prompt_mask = _prefill(model, encoded, pad_id, {cache_arg: cache, **last_logits_only})
    logits, next_position = logits[source], prompt_mask.sum(-1)[source]
    if static:
        if not torch.equal(groups, torch.arange(len(encoded), device=device)):  # repeated prompts: a group each
            cache.batch_select_indices(groups)
        decoder = StaticDecoder(model, [(layer.keys, layer.values) for layer in cache.layers], prompt_mask[groups],
                                next_position, n, max(1, max_new_tokens - 1), cuda_graphs and device.type == "cuda")
        del cache
    else:
        cache.batch_select_indices(source)
        attention = torch.ones((len(source), prompt_len + max_new_tokens), dtype=torch.bool, device=device)
        attention[:, :prompt_len] = prompt_mask[source]
        fast_step = fast_decode_step(model, cache, prompt_len + max_new_tokens) if fast else None
        # sdpa takes a ready (rows, 1, 1, kv) boolean mask; handing one over skips transformers' per-step mask
        # building, which also reads the mask back to the host. Other kernels, or sliding layers, get the 2D mask.
        ready_mask = model.config._attn_implementation == "sdpa" and all(
            isinstance(layer, PreallocatedLayer) for layer in cache.layers)

    def next_logits(tokens, step):
        if static:
            return decoder(tokens, step - 1)
        position, mask = next_position + step - 1, attention[:, :prompt_len + step]
        if fast_step:
            return fast_step(tokens, position, mask)
        return model(input_ids=tokens[:, None], attention_mask=mask[:, None, None, :] if ready_mask else mask,
                     position_ids=position[:, None], use_cache=True, **{cache_arg: cache},
                     **last_logits_only).logits[:, -1]

    # Decode: sample on the device every step; look at the host only every sync_every steps.
    rows = _Rows(len(prompts) * n, sync_every, device)

    def finished(row):
        return rows.sample(row, tokenizer, stop, n, prompt_ids[row // n])

    samples = [None] * len(prompts) * n  # built when a row finishes if on_finish wants it, else at the end
    generator = torch.Generator(device=device).manual_seed(seed)
    step, running = 0, True
    while True:
        if running:
            # static: one draw per row of the call, picked by origin, since its batch also holds idle rows, so that
            # a row's draws do not depend on bucketing; the growing cache holds running rows only, one draw each
            tokens, logprobs = sample_next_token(logits, temperature, top_k, top_p, generator,
                                                 draws=(len(samples), rows.origin) if static else None)
            rows.record(step, tokens, logprobs, eos)
        step += 1

        if running and (step % sync_every == 0 or step == max_new_tokens):
            keep, done = rows.collect(step, step == max_new_tokens, tokenizer, stop)
            if keep and len(keep) <= (1 - finish_share) * len(samples):
                done += rows.end_early(keep)
                keep = []
            for row in done if on_finish is not None else ():
                samples[row] = finished(row)
                on_finish(row, samples[row])
            if static and keep:
                # a smaller batch only once the groups still running fit the next power of two down: each batch
                # size is a graph to capture; finished rows fill the batch up to its size meanwhile
                live = {i // n for i in keep}
                size = 1 << (len(live) - 1).bit_length()
                if size < decoder.groups:
                    idle = [g for g in range(decoder.groups) if g not in live]
                    kept = sorted([*live, *idle[:size - len(live)]])
                    index = decoder.select_groups(torch.tensor(kept, device=device))
                    tokens = tokens[index]
                    rows.select(index.tolist(), index)
            elif done and keep:  # compact: later steps cost only what the unfinished rows need
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                tokens, attention, next_position = tokens[index], attention[index], next_position[index]
                rows.select(keep, index)
            running = bool(keep)

        if lockstep and step % sync_every == 0:
            anyone_running = torch.tensor([int(running)], device=device)
            dist.all_reduce(anyone_running, op=dist.ReduceOp.MAX)
            if not anyone_running.item():
                break
        elif not lockstep and not running:
            break

        if running:
            logits = next_logits(tokens, step)
        else:  # lockstep, this rank is done: a forward on a dummy row keeps the other ranks' collectives matched
            model(input_ids=torch.full((1, 1), pad_id, device=device), use_cache=False, **last_logits_only)

    return [sample or finished(row) for row, sample in enumerate(samples)]


def _prefill(model, encoded, pad_id, cache_args):
    """One forward over each distinct prompt (encoded: {prompt: token ids}, in order of first appearance), left-padded
    so that every row's next token goes to the same cache column. Returns per distinct prompt: the next-token logits
    and the mask of its real (not padding) tokens."""
    device = next(model.parameters()).device
    distinct_ids = list(encoded.values())
    prompt_len = max(len(ids) for ids in distinct_ids)
    input_ids = torch.full((len(distinct_ids), prompt_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(distinct_ids), prompt_len), dtype=torch.bool)
    for i, ids in enumerate(distinct_ids):
        input_ids[i, prompt_len - len(ids):] = torch.tensor(ids)
        prompt_mask[i, prompt_len - len(ids):] = True
    input_ids, prompt_mask = input_ids.to(device), prompt_mask.to(device)
    out = model(input_ids=input_ids, attention_mask=prompt_mask, position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, **cache_args)
    return out.logits[:, -1], prompt_mask


class _Rows:
    """The decode loop's bookkeeping. Host side, per row of the returned list: its tokens and log-probs so far, why
    it finished, how far it was searched for stop strings. Device side, per row of the current batch: what was
    sampled since the last sync, where each row first sampled an EOS, and its row in the returned list. A batch row
    whose row has finished (kept only to keep the batch's size) is None in `alive`; its tokens are dropped."""

    def __init__(self, n_rows, sync_every, device):
        self.alive = list(range(n_rows))  # the returned-list row of each row of the current batch, None once done
        self.origin = torch.arange(n_rows, device=device)  # the same on the device (done rows keep theirs)
        self.tokens, self.logprobs = [[] for _ in range(n_rows)], [[] for _ in range(n_rows)]
        self.finish_reason, self.checked = [None] * n_rows, [0] * n_rows
        self.chunk_tokens = torch.empty((n_rows, sync_every), dtype=torch.long, device=device)
        self.chunk_logprobs = torch.empty((n_rows, sync_every), dtype=torch.float, device=device)
        self.eos_at = torch.zeros(n_rows, dtype=torch.long, device=device)  # length up to the first EOS, 0 = none yet

    def record(self, step, tokens, logprobs, eos):
        """The step's tokens, on the device (no sync)."""
        column = step % self.chunk_tokens.shape[1]
        self.chunk_tokens[:, column], self.chunk_logprobs[:, column] = tokens, logprobs
        self.eos_at = torch.where((self.eos_at == 0) & torch.isin(tokens, eos), step + 1, self.eos_at)

    def collect(self, step, last_step, tokenizer, stop):
        """The only host<->device sync: append the chunk to every running row and end rows at an EOS, a stop string or
        the length limit. Returns (batch positions of the rows still running, returned-list rows that just finished)."""
        filled = (step - 1) % self.chunk_tokens.shape[1] + 1
        new_tokens, new_logprobs = self.chunk_tokens[:, :filled].tolist(), self.chunk_logprobs[:, :filled].tolist()
        keep, done = [], []
        for i, (row, eos_length) in enumerate(zip(self.alive, self.eos_at.tolist())):
            if row is None:
                continue
            tokens, logprobs = self.tokens[row], self.logprobs[row]
            tokens += new_tokens[i]
            logprobs += new_logprobs[i]
            if eos_length:
                del tokens[eos_length:], logprobs[eos_length:]
                self.finish_reason[row] = "eos"
            if stop:
                stop_length = find_stop(tokenizer, tokens, stop, self.checked[row])
                self.checked[row] = len(tokens)
                if stop_length is not None:
                    del tokens[stop_length:], logprobs[stop_length:]
                    self.finish_reason[row] = "stop"
            if self.finish_reason[row] is None and last_step:
                self.finish_reason[row] = "length"
            if self.finish_reason[row] is None:
                keep.append(i)
            else:
                done.append(row)
                self.alive[i] = None
        return keep, done

    def end_early(self, positions):
        """End the rows at these batch positions as they are (finish_reason "early"); returns their rows in the
        returned list."""
        ended = [self.alive[i] for i in positions]
        for i, row in zip(positions, ended):
            self.finish_reason[row], self.alive[i] = "early", None
        return ended

    def select(self, keep, index):
        """Keep only the batch rows at positions `keep` (index: the same on the device)."""
        self.eos_at, self.chunk_tokens, self.chunk_logprobs, self.origin = (
            t[index] for t in (self.eos_at, self.chunk_tokens, self.chunk_logprobs, self.origin))
        self.alive = [self.alive[i] for i in keep]

    def sample(self, row, tokenizer, stop, n, prompt_token_ids):
        ids, reason = self.tokens[row], self.finish_reason[row]
        text = tokenizer.decode(ids[:-1] if reason == "eos" else ids, skip_special_tokens=True)
        if reason == "stop":
            text = text[:min(text.find(s) for s in stop if s in text)]
        return Sample(prompt_index=row // n, text=text, token_ids=ids, logprobs=self.logprobs[row],
                      finish_reason=reason, prompt_token_ids=prompt_token_ids)


# -----------------------------------------------------------------------------
# Tiny random models: tests, benchmarks and smoke runs without downloads

def train_tiny_tokenizer(texts, vocab_size=512):
    """A byte-level BPE tokenizer trained on `texts` in well under a second. Specials: <|endoftext|> (EOS),
    <|im_end|>, <|pad|>. Saved next to a qwen2 config, AutoTokenizer reloads it as Qwen2Tokenizer, which splits
    whitespace differently; PreTrainedTokenizerFast.from_pretrained(dir) gets it back exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_end|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_model(tokenizer, arch="qwen2", seed=0, attn_implementation="sdpa", dtype=torch.float32, **config):
    """A randomly initialised causal LM of architecture `arch` (qwen2, llama, ...) sized for `tokenizer`."""
    settings = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                    tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    settings.update(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **settings), dtype=dtype,
                                                 attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


# -----------------------------------------------------------------------------
# Where each benchmark's data comes from: pinned commits and release tags. Files whose sha256 could be verified are
# pinned; for the others (no copy was reachable to hash) results.json records the sha256 of what was downloaded.

GH = "https://github.com"
QWEN_MATH = f"{GH}/QwenLM/Qwen2.5-Math/raw/a45202bd16f1ec06f433442dc1152d0074773465/evaluation/data"
BCB_RELEASE = f"{GH}/bigcode-project/bigcodebench-annotation/releases/download/v0.1.4"
SOURCES = {
    "humaneval": [dict(url=f"{GH}/openai/human-eval/raw/6d43fb980f9fee3c892a914eda09951f772ad10d/data/"
                           "HumanEval.jsonl.gz",
                       sha256="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef")],
    "humaneval+": [dict(url=f"{GH}/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz",
                        sha256="272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101")],
    "mbpp": [dict(url=f"{GH}/deepseek-ai/DeepSeek-Coder/raw/2f9fd85927c669dae3c0fbb2d607274023af243e/Evaluation/"
                      "MBPP/data/mbpp.jsonl",
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
# EvalPlus's time rules (evalplus 0.3.1, untrusted_check): input i may take max(floor, 4 x the canonical solution's
# time on it), and a whole test group min(60 s, the sum of those) + 1. 0.3.1's floor (DEFAULT_MIN_TIME_LIMIT) is
# 1 s; ours is 4 s, the floor of EvalPlus's later releases, because on a loaded machine 1 s turns noise into timeouts.
EVALPLUS_MIN_TIME_S = 4.0
EVALPLUS_SAMPLE_CAP_S = 60.0
RECORD_TIMEOUT_S = 20.0       # per input, when the canonical solution records expected outputs
CACHE_FORMAT = "v3"           # bump when recorded expected outputs change meaning (v3: typed values)

# -----------------------------------------------------------------------------
# Reading data files


def fail(message):
    """A bad flag or input file: one line naming it (program: error: ...), no traceback."""
    raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'recode'}: error: {message}")


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_jsonl(path, numbered=False):
    """The JSON objects of a .jsonl (or .jsonl.gz) file, blank lines skipped; (line number, row) pairs with
    numbered=True. A line that is not a JSON object raises ValueError naming path:line (CLIs print it as one line)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                reason = e.msg.removesuffix(" at")
                raise ValueError(f"{path}:{lineno}: not valid JSON ({reason} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row) if numbered else row)
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
        fail(f"cannot download the {name} data ({type(e).__name__}: {str(e)[:200]}). Offline? Pass a local copy with "
            "--data PATH (jsonl or jsonl.gz) instead")
    if data is not None:  # outside the try: a cache that cannot be written is not a network problem
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.rename(path)
    digest = sha256_file(path)
    if source.get("sha256") and digest != source["sha256"]:
        fail(f"{path}: sha256 {digest} differs from the pinned {source['sha256']}; delete it and retry")
    return path, digest


def load_rows(name, data_path, shards=None):
    """Rows of a benchmark from --data (one or several comma-separated files) or from its pinned source."""
    if data_path:
        paths = [Path(p) for p in str(data_path).split(",")]
        for p in paths:
            if not p.exists():
                fail(f"--data {p}: no such file")
        info = [dict(path=str(p), sha256=sha256_file(p)) for p in paths]
    else:
        info = []
        for s in shards or SOURCES[name]:
            p, digest = download(s, name)
            info.append(dict(path=str(p), sha256=digest, source=s.get("url") or f"hf:{s['hf']}/{s['file']}"))
    return [r for i in info for r in read_jsonl(i["path"])], info


# -----------------------------------------------------------------------------
# Benchmark loaders. Each returns problems: dicts with task_id, prompt (the task text shown to the model),
# code_prompt (what a bare "completion" continues), code_prefix (prepended before running), tests
# ({group: execute.py spec}; groups run in order, a later group only for samples that passed the earlier
# ones), timeouts ({group: seconds} where a group needs its own job timeout), canonical (full code or None).

CODE_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a markdown "
                    "code block:")


def problem(task_id, prompt, tests=None, code_prompt="", code_prefix="", canonical=None, **extra):
    return dict(task_id=task_id, prompt=prompt, code_prompt=code_prompt, code_prefix=code_prefix, tests=tests or {},
                timeouts={}, canonical=canonical, **extra)


def humaneval_problem(r, **extra):  # a HumanEval-style row: HumanEval, HumanEval+ and MBPP+
    return problem(r["task_id"], f"{CODE_INSTRUCTION}\n```\n{r['prompt'].strip()}\n```\n", code_prompt=r["prompt"],
                   canonical=r["prompt"] + r["canonical_solution"], entry_point=r["entry_point"], **extra)


def load_humaneval(rows):
    # the prompt is trusted code: the judge runs it before the tests, so helpers it defines (HumanEval/32's poly)
    # are the judge's own and only the entry point is the program's
    return [humaneval_problem(r, tests={"base": {
        "type": "assert", "program": f"{r['test']}\ncheck({r['entry_point']})\n", "prelude": r["prompt"],
        "entry_point": r["entry_point"]}}) for r in rows]


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
        entry = re.findall(r"^assert\W*(\w+)\(", tests, re.M)[:1]   # the function the asserts call (126's is `sum`)
        out.append(problem(f"Mbpp/{r['task_id']}", prompt, canonical=r["code"],
                           tests={"base": {"type": "assert", "program": program, "entry_point": entry}}))
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

# EvalPlus's special oracles (evalplus/eval/__init__.py, unsafe_execute): what replaces `out == exp` for one
# task, with _o the output, _e the recorded expected output, _a the arguments, _ATOL the tolerance so far. The
# tolerance fallback (execute.evalplus_close) still applies after them, except after find_zero's, which is final.
SPECIAL_ORACLES = {
    ("humaneval+", "find_zero"): "abs(_poly(*_a, _o)) <= _ATOL",
    ("mbpp+", "are_equivalent"): "True",
    ("mbpp+", "sum_div"): "_o == _e or _o == 0",
    ("mbpp+", "surface_Area"): "_o == _e or abs(_o - _surface_area(*_a)) <= _ATOL",
    ("mbpp+", "digit_distance_nums"): "_o == _e or _o == _digit_distance(*_a)",
    **{("mbpp+", f): "set(_o) == set(_e)" for f in (
        "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
        "intersection_array", "find_dissimilar", "Diff")},
    # outputs (re.Match objects) are not data: EvalPlus records only whether the canonical output is None
    **{("mbpp+", f): "(_o == _e) if isinstance(_o, bool) else (_e == (_o is not None))" for f in (
        "check_str", "text_match_three", "text_starta_endb")},
}
FINAL_ORACLES = {("humaneval+", "find_zero")}
# the test programs run execute.py's own EvalPlus rule in the judge: one copy of it, included as source
ORACLE_HELPERS = f'''
import copy as _copy, json as _json, math as _math
inf, nan = float("inf"), float("nan")
EVALPLUS_RTOL, EVALPLUS_FLOAT_ATOL = {execute.EVALPLUS_RTOL!r}, {execute.EVALPLUS_FLOAT_ATOL!r}
def _poly(xs, x):
    return sum(c * _math.pow(x, i) for i, c in enumerate(xs))
def _surface_area(base_edge, height):
    slant = _math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 2 * base_edge * slant)
def _digit_distance(a, b):
    a, b = str(a), str(b)
    w = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(w), b.zfill(w)))
''' + "".join(inspect.getsource(f) for f in (execute.evalplus_is_floats, execute.evalplus_atol,
                                              execute.evalplus_close))
# When a canonical solution's outputs cannot be recorded, the test program runs it in the sandbox next to the
# candidate and compares there, as EvalPlus does in-process: `out == exp`, then the tolerance fallback.
REFERENCE_CHECK = "_o == _e"


def _call_case(args, restored):
    # restored inputs (tuples, sets, complex) travel as a Python literal; everything else as JSON (inf/nan safe)
    return {"args_py": repr(list(args))} if restored else {"args": args}


def load_evalplus(rows, name, data_sha, workers, lenient=False):
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
                # EvalPlus 0.3.1's limit per input: max(floor, 4 x the canonical solution's time), with our 4 s floor
                # (EVALPLUS_MIN_TIME_S), when execute.py reports per-case times in record mode; else the floor
                limits = [max(EVALPLUS_MIN_TIME_S, 4 * t) for t in times[span]] or [EVALPLUS_MIN_TIME_S] * len(args)
                p["tests"][group], timeout = evalplus_spec(name, r, args, restored, outputs and outputs[span], limits,
                                                           lenient)
                if timeout:
                    p["timeouts"][group] = timeout
    return out


def evalplus_spec(name, r, args, restored, outputs, limits, lenient=False):
    """The execute.py spec of one EvalPlus test group and its job timeout (None: the per-case one). outputs are
    typed values (execute.encode's format), or None when the canonical outputs could not be recorded (Mbpp/255's
    are 1 GB of tuples): the test program then runs the canonical solution in the sandbox next to the candidate
    and compares there. A call spec compares EvalPlus's way; lenient: as plain data (JSON types, absolute atol)."""
    entry, atol = r["entry_point"], float(r["atol"])
    oracle = SPECIAL_ORACLES.get((name, entry))
    sample_cap = min(EVALPLUS_SAMPLE_CAP_S, sum(limits)) + 1
    if oracle or outputs is None:
        literal = outputs and _typed_literal(outputs)
        reference = None if literal else reference_code(name, r)
        program = oracle_program(entry, oracle or REFERENCE_CHECK, args, restored, atol, literal,
                                 reference=reference, final=(name, entry) in FINAL_ORACLES)
        # with the reference run next to the candidate, outputs too big for data are compared where they are made
        spec = {"type": "assert", "program": program, **({"in_process": True} if reference else {})}
        return spec, sample_cap
    cases = [dict(_call_case(a, restored), **({"timeout": round(t, 3)} if t > EVALPLUS_MIN_TIME_S else {}))
             for a, t in zip(args, limits)]
    if lenient:
        values = [execute.decode(o) for o in outputs]
        if atol == 0 and any(execute.evalplus_is_floats(v) for v in values):
            atol = execute.EVALPLUS_FLOAT_ATOL      # for the whole group: plain data has no per-input rule
        for case, v in zip(cases, values):
            case["expected"] = execute.to_plain(v)
        return {"type": "call", "fn_name": entry, "cases": cases, "atol": atol, "sample_timeout": sample_cap}, None
    for case, o in zip(cases, outputs):
        case["expected"] = o
    return {"type": "call", "fn_name": entry, "cases": cases, "atol": atol, "compare": "evalplus",
            "sample_timeout": sample_cap}, None


def _typed_literal(outputs):
    """Python source of recorded typed values for a test program, or None where repr is not a literal that gives
    them back (numpy scalars, nan in a complex): such a task compares with its canonical solution run in the
    sandbox. The repr of builtin values fixes their types; == accepts another set order, repr a nan."""
    values = [execute.decode(o) for o in outputs]
    text = repr(values)
    try:
        back = eval(text, {"__builtins__": {"set": set, "frozenset": frozenset}, "inf": math.inf, "nan": math.nan})
        same = back == values or repr(back) == text
    except Exception:
        same = False
    return text if same else None


def oracle_program(entry, condition, inputs, restored, atol, expected=None, reference=None, final=False):
    """A test program checking `condition`, then EvalPlus's tolerance fallback unless final, on every input;
    expected is the Python source of the recorded outputs, or with `reference` (the canonical code) they are
    computed in the sandbox from a deep copy of the input."""
    args = repr([list(a) for a in inputs]) if restored else f"_json.loads({json.dumps(inputs)!r})"
    head = "" if reference is None else f"_ref = {{}}\nexec({reference!r}, _ref)\n"
    check = (f"    assert {condition}, f'input {{_i}}: got {{_o!r:.200}}'\n" if final else
             f"    _exact = {condition}\n    _ATOL = evalplus_atol(_ATOL, _e)\n"
             f"    assert _exact or evalplus_close(_o, _e, _ATOL), f'input {{_i}}: got {{_o!r:.200}}'\n")
    return (f"{ORACLE_HELPERS}\n{head}_ATOL = {atol!r}\n_ARGS = {args}\n"
            f"_EXP = {expected if reference is None else f'[None] * {len(inputs)}'}\n"
            f"for _i, (_a, _e) in enumerate(zip(_ARGS, _EXP)):\n"
            + ("" if reference is None else f"    _e = _ref[{entry!r}](*_copy.deepcopy(_a))\n")
            + f"    _o = {entry}(*_a)\n" + check)


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
        "type": "call", "fn_name": r["entry_point"], "compare": "evalplus",
        "cases": [_call_case(a, restored) for a in sum(inputs.values(), [])]}}
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
_LCB_MODULES = ("string re datetime collections heapq bisect copy math random statistics itertools functools operator "
                "io sys json")
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
        fail(f"--lcb-version {version!r}: expected release_latest, release_vN, vN or vA_vB")
    a, b = (1, int(m[1])) if m[1] else (int(m[2]), int(m[3] or m[2]))
    if not 1 <= a <= b <= len(LCB_SHARDS):
        fail(f"--lcb-version {version!r}: only {len(LCB_SHARDS)} shards are known")
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
                   start_date=None, end_date=None, workers=None, lenient=False):
    """Problems of one benchmark (see the loader notes above) and where the data came from. lenient: EvalPlus
    benchmarks compare call outputs as plain data (see evalplus_spec)."""
    if name not in BENCHMARKS:
        fail(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
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
            problems = load_evalplus(rows, name, info[0]["sha256"], workers, lenient)
        elif family == "mbpp":
            problems = load_mbpp(rows, BENCHMARKS[name]["split"])
        elif family == "lcb":
            problems = load_lcb(rows, start_date, end_date)
        elif family == "bcb":
            problems = load_bcb(rows, split)
        else:
            problems = load_math(rows, name)
    except KeyError as e:
        fail(f"{info[0]['path']}: rows lack field {e} expected for {name}; is this the right --data file?")
    if not problems:
        fail(f"{name}: no problems selected from {', '.join(i['path'] for i in info)}")
    return problems, info


def task_jobs(problem, solution, job_id=None):
    """execute.py jobs that test one solution of one problem, one per test group, in group order."""
    code = problem["code_prefix"] + solution
    return [{"id": (job_id, g), "code": code, "tests": spec} for g, spec in problem["tests"].items()]


def fold_statuses(statuses):
    """One verdict from the sandbox statuses of a solution's jobs (one per test group): the first failure ('failed',
    'timeout', ...: the code is wrong), else 'harness_error' when the sandbox itself failed on a group (nothing is
    known about the code), else 'passed'; 'no code' when nothing ran."""
    failures = [s for s in statuses if s not in ("passed", "harness_error")]
    if failures:
        return failures[0]
    return "harness_error" if "harness_error" in statuses else "passed" if statuses else "no code"


def load_problems(paths, benchmark=None, need_reference=False, tasks=TASKS):
    """Training problems from JSONL files (the README's problem format), every row checked, a bad one named by
    path:line; or, with `benchmark`, that benchmark's loader on those files. need_reference: SFT's reference;
    tasks: the task types allowed (grpo.py passes its reward registry)."""
    if benchmark:
        problems = [dict(p, task="math" if "answer" in p else "code")
                    for p in load_benchmark(benchmark, ",".join(paths))[0] if not p.get("skip")]
        if any(p["task"] not in tasks for p in problems):
            fail(f"--data-benchmark {benchmark}: this task type is not supported for training yet")
        if need_reference and any(completion_target(p) is None for p in problems):
            fail(f"--algo sft: {benchmark} rows carry no reference completion; write a JSONL with 'reference' or "
                 f"'completion' instead")
        return problems
    problems = []
    for path in paths:
        if not os.path.isfile(path):
            fail(f"{path}: no such problems file")
        try:
            rows = read_jsonl(path, numbered=True)
        except ValueError as e:
            fail(e)
        for lineno, row in rows:
            where = f"{path}:{lineno}"
            if not isinstance(row.get("prompt"), str):
                fail(f"{where}: a problem needs a 'prompt' string")
            task = row.get("task", "math" if "answer" in row and "tests" not in row else "code")
            if task not in tasks:
                fail(f"{where}: unknown task {task!r} (known: {', '.join(tasks)})")
            if task == "math" and not isinstance(row.get("answer"), (str, int, float)):
                fail(f"{where}: a math problem needs an 'answer' (the gold final answer, a string or number)")
            tests = row.get("tests")
            if isinstance(tests, dict) and "type" in tests:
                tests = {"base": tests}  # one spec: a single test group
            if task == "code":
                if not isinstance(tests, dict) or not tests:
                    fail(f"{where}: 'tests' must be an execute.py test spec or {{group: spec}}")
                for group, spec in tests.items():
                    problem = validate_job({"code": "", "tests": spec})
                    if problem:
                        fail(f"{where}: tests[{group!r}]: {problem}")
            if need_reference and completion_target(dict(row, task=task)) is None:
                wanted = "answer" if task == "math" else "code"
                fail(f"{where}: --algo sft needs 'reference' {{reasoning, {wanted}}} or a 'completion' string")
            problems.append(dict(row, task_id=str(row.get("task_id", where)), task=task, tests=tests or {},
                                 **({"answer": str(row["answer"])} if task == "math" else {}),
                                 code_prefix=row.get("code_prefix", ""), code_prompt=row.get("code_prompt", "")))
    if not problems:
        fail(f"no problems in {', '.join(paths)}")
    return problems


def format_completion(reasoning, code):
    """ReCode's output format, the text R_fmt accepts: what SFT teaches."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n```python\n{code.strip()}\n```\n</answer>"


def format_math_completion(reasoning, answer):
    """ReCode's output format for math: the final answer boxed inside <answer>."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n\\boxed{{{str(answer).strip()}}}\n</answer>"


def completion_target(problem):
    reference = problem.get("reference")
    if problem.get("task") == "math":
        if isinstance(reference, dict) and isinstance(reference.get("reasoning"), str) and "answer" in reference:
            return format_math_completion(reference["reasoning"], reference["answer"])
    elif isinstance(reference, dict) and all(isinstance(reference.get(k), str) for k in ("reasoning", "code")):
        return format_completion(reference["reasoning"], reference["code"])
    return problem.get("completion") if isinstance(problem.get("completion"), str) else None


# -----------------------------------------------------------------------------
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
    fail(f"unknown prompt format {style!r} (recode or instruct)")


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


# -----------------------------------------------------------------------------
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


# -----------------------------------------------------------------------------
# Sampling a benchmark into a samples file (evaluate.py --model scores it; lcb-rb builds pairs from it)


def load_samples(path, known_ids):
    """Samples in EvalPlus format: {task_id, solution} (full code) or {task_id, completion} (continues the
    prompt; for math, the model's whole output)."""
    samples = []
    for lineno, r in read_jsonl(path, numbered=True):
        where = f"{path}:{lineno}"
        if "task_id" not in r:
            fail(f"{where}: missing field 'task_id'")
        if str(r["task_id"]) not in known_ids:
            fail(f"{where}: task_id {r['task_id']!r} is not in this benchmark ({len(known_ids)} tasks, "
                f"e.g. {next(iter(known_ids))!r})")
        field = "solution" if "solution" in r else "completion" if "completion" in r else None
        if field is None:
            fail(f"{where}: missing field 'solution' or 'completion'")
        if not isinstance(r[field], str):
            fail(f"{where}: field {field!r} must be a string, got {type(r[field]).__name__}")
        samples.append(dict(r, task_id=str(r["task_id"]), line=lineno))
    return samples


_LOADED = {}


def generate_samples(problems, cfg, samples_path):
    """Append missing samples (n per task) to samples_path; tasks that already have them are not redone."""
    have = Counter(r["task_id"] for r in read_jsonl(samples_path)) if samples_path.exists() else Counter()
    need = [(p, cfg.n - have[p["task_id"]]) for p in problems.values() if have[p["task_id"]] < cfg.n]
    if not need:
        return
    print(f"generating {sum(k for _, k in need)} samples for {len(need)} tasks ({sum(have.values())} already done)")
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
                                temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + start,
                                cuda_graphs=not cfg.no_cuda_graphs)
                for out in outs:
                    p = batch[out.prompt_index]
                    row = (dict(completion=out.text) if kind == "math" else
                           dict(solution=solution_from_output(p, out.text, rule), raw_output=out.text))
                    f.write(json.dumps(dict(task_id=p["task_id"], **row, finish_reason=out.finish_reason,
                                            n_tokens=len(out.token_ids))) + "\n")
                f.flush()


# -----------------------------------------------------------------------------
# CRPL data: a teacher rewrites each problem's reasoning into an optimized and a degraded variant
#
# reward.py learns the order optimized > original > degraded from these records. The original is the problem's
# reference solution, or the teacher's own when there is none. Each problem is degraded along one of the paper's three
# dimensions, picked from a hash of (seed, problem id) so that a rerun picks the same one.

SOLUTION_TEXT = "Problem:\n{problem}\n\nReasoning:\n{reasoning}\n\nCode:\n```python\n{code}\n```"
REPLY_FORMAT = ("Reply in exactly this format, with nothing before or after it:\n"
                "<think>\nthe reasoning\n</think>\n<answer>\n```python\nthe code\n```\n</answer>")

OPTIMIZE_PROMPT = """Below is a programming problem with a solution: a reasoning process and the code it leads to.

Rewrite the reasoning process so that it is better in three dimensions:
- factual accuracy: every statement about the problem, the algorithm, its complexity and Python is true;
- logical rigor: every step follows from the steps before it, constraints and edge cases are handled, and the key
  claims are justified or checked;
- coherence: the steps come in a natural order, with nothing irrelevant, repeated or contradictory.
Make it better, not merely longer. Keep the approach of the code, and change the code only to fix a real mistake.

{solution}

""" + REPLY_FORMAT

DEGRADE_PROMPT = """Below is a programming problem with a solution: a reasoning process and the code it leads to.

We need a worse version of this reasoning to train a model that judges reasoning quality. Rewrite the reasoning so
that it is clearly worse in one dimension, {dimension}: {instruction}
Keep the length, tone and overall approach close to the original so that the flaws do not show on the surface, and
do not point them out. Copy the code unchanged.

{solution}

""" + REPLY_FORMAT

DEGRADATIONS = {
    "factual accuracy": ("state a few false facts, such as a wrong property of the input, a wrong value in a worked "
                         "example, a wrong complexity, or a wrong claim about how a Python built-in behaves."),
    "logical rigor": ("drop the justification of the key steps, skip the edge cases and constraints, and reach at "
                      "least one conclusion that does not follow from what came before."),
    "coherence": ("put the steps out of order so that conclusions come before what they rely on, contradict an "
                  "earlier step later on, and mix in an irrelevant digression."),
}

# Math problems (the paper's generalization experiment): the same three dimensions, said about a worked solution,
# and the degraded variant keeps the final answer as the code variant keeps the code. The reply format's braces are
# doubled: it is part of a str.format template.
MATH_SOLUTION_TEXT = "Problem:\n{problem}\n\nReasoning:\n{reasoning}\n\nFinal answer: \\boxed{{{answer}}}"
MATH_REPLY_FORMAT = ("Reply in exactly this format, with nothing before or after it:\n"
                     "<think>\nthe reasoning\n</think>\n<answer>\n\\boxed{{the final answer}}\n</answer>")

MATH_OPTIMIZE_PROMPT = """Below is a math problem with a solution: a reasoning process and the final answer it reaches.

Rewrite the reasoning process so that it is better in three dimensions:
- factual accuracy: every calculation, intermediate value, formula and mathematical claim is correct;
- logical rigor: every step follows from the steps before it, the conditions of the problem and special cases are
  handled, and the key claims are justified or checked (for example by substituting the result back);
- coherence: the steps come in a natural order, with nothing irrelevant, repeated or contradictory.
Make it better, not merely longer. Keep the approach and the final answer, and change the answer only to fix a real
mistake.

{solution}

""" + MATH_REPLY_FORMAT

MATH_DEGRADE_PROMPT = """Below is a math problem with a solution: a reasoning process and the final answer it reaches.

We need a worse version of this reasoning to train a model that judges reasoning quality. Rewrite the reasoning so
that it is clearly worse in one dimension, {dimension}: {instruction}
Keep the length, tone and overall approach close to the original so that the flaws do not show on the surface, and
do not point them out. Copy the final answer unchanged.

{solution}

""" + MATH_REPLY_FORMAT

MATH_DEGRADATIONS = {
    "factual accuracy": ("make a few errors of fact or calculation, such as a wrong intermediate value, a quantity "
                         "misread from the problem, or a wrong formula or definition."),
    "logical rigor": ("drop the justification of the key steps, skip the conditions and special cases, and reach at "
                      "least one conclusion that does not follow from what came before."),
    "coherence": ("put the steps out of order so that results are used before they are derived, contradict an "
                  "earlier step later on, and mix in an irrelevant digression."),
}

JUDGE_PROMPT = """Below is a programming problem with a solution: a reasoning process and the code written after it.

Is the reasoning logically correct, and does the code implement exactly what the reasoning describes? Explain
briefly, then end with one line: VERDICT: YES or VERDICT: NO.

{solution}"""


class MalformedReply(ValueError):
    pass


class TeacherError(RuntimeError):
    pass


def make_request(kind, problem, solution=None, dimension=None):
    """One question to a teacher: solve | optimize | degrade | judge (code only). A math problem's solution is
    {"reasoning", "answer"} instead of {"reasoning", "code"}. The structured fields serve the toy teacher."""
    task = problem.get("task", "code")
    if kind == "solve":  # the original, written the way the policy will be asked to write
        system, user = RECODE_SYSTEM_PROMPTS[task], problem["prompt"]
    elif task == "math":
        text = MATH_SOLUTION_TEXT.format(problem=problem["prompt"].strip(), reasoning=solution["reasoning"].strip(),
                                         answer=str(solution["answer"]).strip())
        template = {"optimize": MATH_OPTIMIZE_PROMPT, "degrade": MATH_DEGRADE_PROMPT}[kind]
        system, user = None, template.format(solution=text, dimension=dimension,
                                             instruction=MATH_DEGRADATIONS.get(dimension))
    else:
        text = SOLUTION_TEXT.format(problem=problem["prompt"].strip(), reasoning=solution["reasoning"].strip(),
                                    code=solution["code"].strip())
        template = {"optimize": OPTIMIZE_PROMPT, "degrade": DEGRADE_PROMPT, "judge": JUDGE_PROMPT}[kind]
        system, user = None, template.format(solution=text, dimension=dimension,
                                             instruction=DEGRADATIONS.get(dimension))
    return {"kind": kind, "id": problem["task_id"], "system": system, "user": user, "problem": problem["prompt"],
            "dimension": dimension, "task": task, **(solution or {})}


def parse_solution(reply, request=None):
    """{"reasoning", "code"} (or, for a math request, {"reasoning", "answer"}: the last \\boxed{} inside <answer>)
    from a reply in ReCode's format, or MalformedReply naming what is missing."""
    think, answer = split_reasoning(reply)
    if not (think or "").strip():
        raise MalformedReply("no <think>...</think> reasoning")
    if (request or {}).get("task") == "math":
        boxed = last_boxed(answer or "")
        if not (boxed or "").strip():
            raise MalformedReply("no complete, non-empty \\boxed{} answer inside <answer>")
        return {"reasoning": think.strip(), "answer": boxed.strip()}
    if answer is None or answer.count("```") < 2:
        raise MalformedReply("no complete ```python code block inside <answer>")
    code = extract_code(reply)
    if not code.strip():
        raise MalformedReply("empty code block")
    return {"reasoning": think.strip(), "code": code}


def parse_verdict(reply, request=None):
    verdicts = re.findall(r"VERDICT:\s*(YES|NO)\b", reply, re.I)
    if not verdicts:
        raise MalformedReply("no 'VERDICT: YES' or 'VERDICT: NO' line")
    return verdicts[-1].upper() == "YES"


def ask(teacher, requests, parse, max_attempts, counts):
    """Parsed replies, in order. A malformed reply is asked again, up to max_attempts times in all; where every attempt
    was malformed the result is None and failures[i] = (reason, last reply)."""
    results, failures, pending = [None] * len(requests), {}, list(range(len(requests)))
    for attempt in range(max_attempts):
        if not pending:
            break
        for i, reply in zip(pending, teacher([requests[i] for i in pending], attempt)):
            try:
                results[i] = parse(reply, requests[i])
                failures.pop(i, None)
            except MalformedReply as e:
                counts["malformed teacher replies"] += 1
                failures[i] = (str(e), reply)
        pending = [i for i in pending if results[i] is None]
    return results, failures


class HTTPTeacher:
    """Any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a hosted API), standard library only: requests
    run `concurrency` at a time, start at most `rate` per second (0: no limit), and 429/5xx/network errors are retried
    with exponential backoff, waiting at least what the server's Retry-After asks."""

    def __init__(self, base_url, model, api_key_env="OPENAI_API_KEY", concurrency=8, rate=0.0, retries=6,
                 timeout=600.0, temperature=0.7, max_tokens=4096, backoff=1.0):
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.name, self.model, self.api_key = f"{model}@{url}", model, os.environ.get(api_key_env)
        self.concurrency, self.rate, self.retries, self.timeout = concurrency, rate, retries, timeout
        self.temperature, self.max_tokens, self.backoff = temperature, max_tokens, backoff
        self.lock, self.next_start = threading.Lock(), 0.0
        self.sleep, self.clock = time.sleep, time.monotonic  # tests replace both

    def __call__(self, requests, attempt=0):
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self.complete, r["system"], r["user"]) for r in requests]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def wait_for_turn(self):
        if self.rate <= 0:
            return
        with self.lock:
            now = self.clock()
            start = max(now, self.next_start)
            self.next_start = start + 1.0 / self.rate
        if start > now:
            self.sleep(start - now)

    def complete(self, system, user):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            self.wait_for_turn()
            retry_after = 0.0
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url, body, headers), timeout=self.timeout) as r:
                    raw = r.read().decode("utf-8", "replace")
                break
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}"
                if e.code != 429 and e.code < 500:  # a bad request, key or model name: asking again cannot help
                    raise TeacherError(f"{self.url}: {error}") from None
                retry_after = seconds_to_wait(e.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"
            if attempt == self.retries:
                raise TeacherError(f"{self.url}: no answer after {self.retries + 1} tries, last: {error}")
            self.sleep(max(retry_after, min(60.0, self.backoff * 2 ** attempt) * random.uniform(1.0, 1.5)))
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, LookupError, TypeError):
            return raw  # not a chat completion: recorded as a malformed reply, with what came back


def seconds_to_wait(retry_after):
    """Retry-After: delay seconds or an HTTP date."""
    if not retry_after:
        return 0.0
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time())
        except (TypeError, ValueError):
            return 0.0


class LocalTeacher:
    """A model loaded here, sampled with the engine above."""

    def __init__(self, path, temperature=0.7, max_new_tokens=4096, seed=0, batch_rows=8, dtype=None, device=None):
        self.name = f"local:{path}"
        self.model, self.tokenizer = load_model(path, dtype, device)
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.seed, self.batch_rows = seed, batch_rows

    def __call__(self, requests, attempt=0):
        prompts = [format_prompt(self.tokenizer, r["user"], r["system"]) for r in requests]
        texts = []
        for start in range(0, len(prompts), self.batch_rows):
            texts += [s.text for s in generate(self.model, self.tokenizer, prompts[start:start + self.batch_rows],
                                               max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                               seed=self.seed + 1000 * attempt + start)]
        return texts


# The toy teacher: rule-based rewrites for CPU runs and tests. A rewrite is a function of (seed, problem id, kind)
# only. It rewrites the reference's steps (its lines, or its sentences when it is one line) and keeps the code.
TOY_SWAPS = dict(p for a, b in [("smallest", "largest"), ("minimum", "maximum"), ("first", "last"), ("even", "odd"),
                                ("sum", "product"), ("ascending", "descending"), ("before", "after"), ("left", "right"),
                                ("less", "greater"), ("positive", "negative"), ("true", "false"), ("empty", "full")]
                 for p in [(a, b), (b, a)])
TOY_FALSE_FACTS = ["Python strings are mutable, so the input can be changed in place.",
                   "range(n) yields the numbers 1 to n.", "Sorting a list in Python takes linear time.",
                   "A dict keeps its keys in sorted order.", "Integer division with // rounds toward zero."]
TOY_LEAPS = ["This obviously works for every input, so nothing needs to be checked.",
             "The result is clearly correct, so we can stop here.", "No special cases can occur here."]
TOY_DIGRESSIONS = ["Python was first released in 1991.", "Many people prefer tabs to spaces.",
                   "Variable names are a matter of taste.", "Some languages index lists from 1."]
TOY_EDGE_CASES = ["Edge cases: an empty input takes the same path, so it is handled.",
                  "Edge cases: inputs at the limits take the same steps, so they are covered."]
TOY_MATH_FALSE_FACTS = ["Multiplying a number by 1 doubles it.", "Half of 10 is 4.", "7 plus 8 is 16.",
                        "Subtracting a number from itself leaves 1.", "A dozen is 10."]
TOY_MATH_LEAPS = ["The result is clearly right, so there is nothing to check.",
                  "The other steps obviously do not matter here.", "This gives the answer, no need to verify it."]
TOY_MATH_DIGRESSIONS = ["The equals sign was introduced in 1557.", "Some people count on their fingers.",
                        "Zero was not always considered a number.", "Many calculators use base 10."]
TOY_MATH_CHECKS = ["Check: working backwards from the result through each step gives the starting amount again.",
                   "Check: each step uses the result of the step before it, and every quantity in the problem is used."]
TOY_PHRASES = {"code": dict(false_facts=TOY_FALSE_FACTS, leaps=TOY_LEAPS, digressions=TOY_DIGRESSIONS),
               "math": dict(false_facts=TOY_MATH_FALSE_FACTS, leaps=TOY_MATH_LEAPS, digressions=TOY_MATH_DIGRESSIONS)}
JUSTIFYING = re.compile(r"\b(because|since|so|therefore|thus|edge|empty|check|ensure|otherwise)\b", re.I)


def toy_phrases(request):
    return TOY_PHRASES[request.get("task", "code")]


def split_steps(reasoning):
    lines = [line.strip() for line in reasoning.strip().splitlines() if line.strip()]
    if len(lines) > 1:
        return lines, "\n"
    return re.split(r"(?<=[.!?])\s+", reasoning.strip()), " "


def loop_depth(node):
    inner = max((loop_depth(child) for child in ast.iter_child_nodes(node)), default=0)
    return inner + isinstance(node, (ast.For, ast.While, ast.comprehension))


def toy_optimize(steps, request, rng):
    """Add what a careful solver writes: numbered steps, edge cases, the complexity and a check (tersely: the toy
    policy has to be able to write it within its token budget)."""
    try:
        depth = loop_depth(ast.parse(request["code"]))
    except SyntaxError:
        depth = 1
    cost = "O(n log n)" if "sort" in request["code"] and depth < 2 else f"O(n^{depth})" if depth > 1 else "O(n)"
    name = re.search(r"def (\w+)", request["code"])
    return ([f"Step {i}: {s}" for i, s in enumerate(steps, 1)]
            + [rng.choice(TOY_EDGE_CASES), f"Complexity: {cost} time.",
               f"Check: {'`' + name[1] + '`' if name else 'the code'} does every step above."])


def toy_factual(steps, request, rng):
    """Swap words for their opposites or change numbers (in two places, or one per two steps in a long reasoning, so
    that the change stays visible to the near-identity filter); a false fact where there is nothing to change."""
    words = re.compile(r"\b(\d+|" + "|".join(TOY_SWAPS) + r")\b", re.I)
    spots = [(i, m) for i, step in enumerate(steps) for m in words.finditer(step)]
    steps = list(steps)
    if not spots:
        steps.insert(rng.randrange(len(steps) + 1), rng.choice(toy_phrases(request)["false_facts"]))
        return steps
    chosen = rng.sample(spots, min(max(2, len(steps) // 2), len(spots)))
    for i, m in sorted(chosen, key=lambda s: (s[0], -s[1].start())):  # right to left: earlier offsets stay valid
        old = m[0]
        new = str(int(old) + rng.randint(1, 3)) if old.isdigit() else TOY_SWAPS[old.lower()]
        new = new.capitalize() if old[0].isupper() else new
        steps[i] = steps[i][:m.start()] + new + steps[i][m.end():]
    return steps


def toy_rigor(steps, request, rng):
    """Drop the steps that justify or check something (one step where none does) and add an unjustified leap."""
    justifying = {i for i, step in enumerate(steps) if JUSTIFYING.search(step)}
    if not justifying or len(justifying) == len(steps):
        justifying = {rng.randrange(len(steps))} if len(steps) > 1 else set()
    kept = [step for i, step in enumerate(steps) if i not in justifying]
    kept.insert(rng.randint(len(kept) // 2, len(kept)), rng.choice(toy_phrases(request)["leaps"]))
    return kept


def toy_coherence(steps, request, rng):
    """Shuffle the steps out of order and mix in an irrelevant digression."""
    shuffled = list(steps)
    while len(set(steps)) > 1 and shuffled == steps:
        rng.shuffle(shuffled)
    shuffled.insert(rng.randrange(len(shuffled) + 1), rng.choice(toy_phrases(request)["digressions"]))
    return shuffled


def toy_math_optimize(steps, request, rng):
    """What a careful solver adds to a worked solution: the goal, numbered steps, a check and the answer."""
    question = re.split(r"(?<=[.!?])\s+", request["problem"].strip())[-1]
    return ([f"Goal: {question}"] + [f"Step {i}: {s}" for i, s in enumerate(steps, 1)]
            + [rng.choice(TOY_MATH_CHECKS), f"So the answer is {request['answer']}."])


TOY_DEGRADE = {"factual accuracy": toy_factual, "logical rigor": toy_rigor, "coherence": toy_coherence}


class ToyTeacher:
    name = "toy"

    def __init__(self, seed=0):
        self.seed = seed

    def __call__(self, requests, attempt=0):
        return [self.reply(r) for r in requests]

    def reply(self, request):
        if request["kind"] not in ("optimize", "degrade"):
            raise ValueError(f"the toy teacher only optimizes and degrades reference solutions, it cannot "
                             f"{request['kind']} (problem {request['id']!r}: give it a 'reference' "
                             f"{{reasoning, code}} or, for math, {{reasoning, answer}})")
        rng = random.Random(f"{self.seed}:{request['id']}:{request['kind']}")
        steps, joiner = split_steps(request["reasoning"])
        math_task = request.get("task") == "math"
        optimize = toy_math_optimize if math_task else toy_optimize
        rewrite = optimize if request["kind"] == "optimize" else TOY_DEGRADE[request["dimension"]]
        reasoning = joiner.join(rewrite(steps, request, rng))
        if math_task:
            return format_math_completion(reasoning, request["answer"])
        return format_completion(reasoning, request["code"])


def make_teacher(spec, args):
    """toy | local:PATH | http(s)://HOST/v1 (an OpenAI-compatible server), with the command line's settings."""
    if spec == "toy":
        return ToyTeacher(args.seed)
    if spec.startswith("local:"):
        return LocalTeacher(spec[len("local:"):], args.teacher_temperature, args.teacher_max_tokens, args.seed,
                            dtype=args.dtype, device=args.device)
    if spec.startswith(("http://", "https://")):
        if not args.teacher_model:
            raise ValueError(f"teacher {spec}: name the model the server serves with --teacher-model")
        return HTTPTeacher(spec, args.teacher_model, args.api_key_env, args.concurrency, args.rate, args.retries,
                           args.request_timeout, args.teacher_temperature, args.teacher_max_tokens)
    raise ValueError(f"unknown teacher {spec!r}: expected toy, local:PATH or an http(s)://.../v1 base URL")


def code_status(problems, codes, timeout=3.0, workers=None, memory_mb=2048, progress=False):
    """execute.py's verdict on each (problem, code), folded by fold_statuses: 'passed' when every test group passes.
    The same code for the same problem runs once."""
    by_id = {p["task_id"]: p for p in problems}
    unique = list(dict.fromkeys((p["task_id"], code) for p, code in zip(problems, codes)))
    jobs = [job for k, (pid, code) in enumerate(unique) for job in task_jobs(by_id[pid], code, k)]
    statuses = {key: [] for key in unique}
    for job, result in zip(jobs, run_jobs(jobs, workers=workers, timeout=timeout, memory_mb=memory_mb,
                                          fail_fast=True, progress=progress) if jobs else []):
        statuses[unique[job["id"][0]]].append(result["status"])
    verdict = {key: fold_statuses(s) for key, s in statuses.items()}
    return [verdict[(p["task_id"], code)] for p, code in zip(problems, codes)]


def solution_status(problems, solutions, **exec_args):
    """'passed' when a solution is right: its final answer matches the gold one (math_answers_match), or its code
    passes every test (code_status); else why not."""
    status = [("passed" if math_answers_match(sol["answer"], p["answer"]) else "wrong answer")
              if p.get("task") == "math" else None for p, sol in zip(problems, solutions)]
    code = [i for i, st in enumerate(status) if st is None]
    if code:
        for i, st in zip(code, code_status([problems[i] for i in code], [solutions[i]["code"] for i in code],
                                           **exec_args)):
            status[i] = st
    return status


def reference_solution(problem):
    reference = problem["reference"]
    if problem.get("task") == "math":
        return {"reasoning": reference["reasoning"], "answer": str(reference.get("answer", problem["answer"]))}
    return {"reasoning": reference["reasoning"], "code": reference["code"]}


def fails(problem):
    return "gets a wrong answer" if problem.get("task") == "math" else "fails tests"


def near_identical(a, b, threshold):
    matcher = difflib.SequenceMatcher(None, a, b)
    return matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold  # quick_ratio: a cheap upper bound


def degrade_dimension(problem_id, seed):
    dimensions = list(DEGRADATIONS)
    return dimensions[int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest(), 16) % len(dimensions)]


def synthesize_chunk(chunk, teacher, counts, seed, max_attempts, max_similarity, exec_args):
    """[(record or None, failure rows)] for each problem of the chunk, in order."""
    failures = {p["task_id"]: [] for p in chunk}

    def drop(p, stage, reason, reply=None):
        counts[stage] += 1
        failures[p["task_id"]].append({"id": p["task_id"], "stage": stage, "reason": reason,
                                       **({"reply": reply[-4000:]} if reply is not None else {})})

    # 1. The original: the reference, or the teacher's own solution; it must pass the tests (math: reach the gold
    # answer; a math reference without an answer of its own is taken to reach the gold one).
    originals = {p["task_id"]: reference_solution(p) for p in chunk if p.get("reference")}
    unsolved = [p for p in chunk if not p.get("reference")]
    solved, bad = ask(teacher, [make_request("solve", p) for p in unsolved], parse_solution, max_attempts, counts)
    for i, p in enumerate(unsolved):
        if solved[i] is None:
            drop(p, "solve: malformed reply", *bad[i])
        else:
            originals[p["task_id"]] = solved[i]
    live, unrecorded = [p for p in chunk if p["task_id"] in originals], set()
    for p, status in zip(live, solution_status(live, [originals[p["task_id"]] for p in live], **exec_args)):
        if status == "harness_error":  # the sandbox failed, not the code: left unrecorded, so a rerun tries again
            counts["original: sandbox error (a rerun tries again)"] += 1
            unrecorded.add(p["task_id"])
        elif status != "passed":
            drop(p, f"original {fails(p)}", status)
    live = [p for p in live if not failures[p["task_id"]] and p["task_id"] not in unrecorded]

    # 2. The variants; the optimized code must pass the tests (math: keep the right answer); a copy of the original
    # is no variant.
    dimensions = {p["task_id"]: degrade_dimension(p["task_id"], seed) for p in live}
    requests = ([make_request("optimize", p, originals[p["task_id"]]) for p in live]
                + [make_request("degrade", p, originals[p["task_id"]], dimensions[p["task_id"]]) for p in live])
    replies, bad = ask(teacher, requests, parse_solution, max_attempts, counts)
    variants = {p["task_id"]: {"original": originals[p["task_id"]], "optimized": replies[i],
                               "degraded": replies[len(live) + i]} for i, p in enumerate(live)}
    for i, p in enumerate(live):
        for name, kind, j in (("optimized", "optimize", i), ("degraded", "degrade", len(live) + i)):
            v = variants[p["task_id"]]
            if v[name] is None:
                drop(p, f"{kind}: malformed reply", *bad[j])
            elif near_identical(v[name]["reasoning"], v["original"]["reasoning"], max_similarity):
                drop(p, f"{name} (near-)identical to the original", f"difflib ratio >= {max_similarity}")
                v[name] = None
    tested = [p for p in live if variants[p["task_id"]]["optimized"]]
    for p, status in zip(tested, solution_status(tested, [variants[p["task_id"]]["optimized"] for p in tested],
                                                 **exec_args)):
        if status != "passed":
            drop(p, f"optimized {fails(p)}", status)
            variants[p["task_id"]]["optimized"] = None

    results = []
    for p in chunk:
        record, v = None, variants.get(p["task_id"])
        if v is not None:
            pairs = [f"{a}>{b}" for a, b in CRPL_PAIRS if v[a] and v[b]]
            if pairs:
                record = {"id": p["task_id"], "problem": p["prompt"], "dimension": dimensions[p["task_id"]],
                          "teacher": teacher.name, **v, "pairs": pairs}
                counts.update(f"pairs {t}" for t in pairs)
            else:
                drop(p, "fewer than two variants left", "a pair needs two of original, optimized, degraded")
        results.append((record, failures[p["task_id"]]))
    return results


def finished_ids(path):
    """ids in a JSONL file this section wrote. A last line cut short by a killed run is removed from the file."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            f.truncate(end)
            print(f"{path}: removed an unfinished last line ({len(data) - end} bytes) left by an interrupted run")
    ids = set()
    for lineno, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}:{lineno}: not a row synth.py wrote (a JSON object with an 'id'); "
                             f"move the file away or choose another output") from None
    return ids


def synthesize(problems, teacher, out, failures_out=None, seed=0, chunk=32, max_attempts=3, max_similarity=0.99,
               exec_timeout=3.0, exec_workers=None, exec_memory_mb=2048):
    """CRPL records for `problems` (load_problems' dicts: task_id, prompt, tests, code_prefix, and optionally a
    reference {reasoning, code}; or, with task "math", an answer and optionally a reference {reasoning, answer},
    checked with math_answers_match instead of the sandbox), appended to `out` one flushed line at a time;
    every problem that yields no record, and every malformed teacher reply given up on, goes to `failures_out` with
    the reason. Problems found in either file are skipped, so a rerun resumes an interrupted one. Returns the counts
    the summary prints."""
    failures_out = failures_out or os.path.splitext(out)[0] + ".failures.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    done = finished_ids(out) | finished_ids(failures_out)
    counts, todo, seen = Counter(), [], set()
    for p in problems:
        if p["task_id"] in seen or p["prompt"] in seen:
            counts["duplicate problems skipped"] += 1
        elif p["task_id"] in done:
            counts["already done"] += 1
        else:
            tests = p.get("tests") or {}
            tests = {"base": tests} if "type" in tests else tests  # one spec: one test group
            todo.append(dict(p, code_prefix=p.get("code_prefix", ""), tests=tests))
        seen.update((p["task_id"], p["prompt"]))
    exec_args = dict(timeout=exec_timeout, workers=exec_workers, memory_mb=exec_memory_mb)
    with open(out, "a") as data, open(failures_out, "a") as failed, tqdm(total=len(todo), desc="crpl") as bar:
        for start in range(0, len(todo), chunk):
            for record, failure_rows in synthesize_chunk(todo[start:start + chunk], teacher, counts, seed,
                                                         max_attempts, max_similarity, exec_args):
                if record is not None:  # the record first: a crash in between loses a note, never data
                    data.write(json.dumps(record) + "\n")
                    data.flush()
                    counts["records written"] += 1
                for row in failure_rows:
                    failed.write(json.dumps(row) + "\n")
                failed.flush()
                bar.update(1)
    print(f"crpl: {len(problems)} problems -> {out} (failures: {failures_out})")
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")
    return counts


# -----------------------------------------------------------------------------
# LCB-RB: superior vs inferior reasoning for the same LiveCodeBench problem, from sampled solutions

def lcb_rb_pairs(problems, samples, judge=None, pairs_per_problem=1, seed=0, max_attempts=3, exec_timeout=6.0,
                 exec_workers=None, exec_memory_mb=4096):
    """{"problem", "chosen", "rejected"} rows. Execution is the first filter: chosen from the samples whose code
    passes every test, rejected from those that fail. With a `judge` teacher, a chosen sample must also be judged
    correct and consistent with its code. problems: {task_id: load_benchmark's problem}; samples: load_samples' rows
    with the whole output in raw_output (or completion). Returns (rows, counts)."""
    counts, candidates = Counter(), defaultdict(dict)  # task_id -> distinct (reasoning, code), in sample order
    for s in samples:
        text = s.get("raw_output", s.get("completion", ""))
        think, _ = split_reasoning(text)
        code = s.get("solution") or extract_code(text)
        if not (think or "").strip() or not code.strip():
            counts["samples without <think> reasoning or code"] += 1
        elif (think.strip(), code) in candidates[s["task_id"]]:
            counts["duplicate samples"] += 1
        else:
            candidates[s["task_id"]][(think.strip(), code)] = None
    flat = [(t, r, c) for t, distinct in candidates.items() for r, c in distinct]
    statuses = code_status([problems[t] for t, _, _ in flat], [c for _, _, c in flat], exec_timeout, exec_workers,
                           exec_memory_mb, progress=True)
    passing, failing = defaultdict(list), defaultdict(list)
    for (t, r, c), status in zip(flat, statuses):
        if status == "harness_error":  # the sandbox failed, not the code: no evidence either way
            counts["samples left out: sandbox error"] += 1
            continue
        (passing if status == "passed" else failing)[t].append({"reasoning": r, "code": c})
        counts[f"samples {'passing' if status == 'passed' else 'failing'}"] += 1
    tasks = [t for t in candidates if passing[t] and failing[t]]
    counts["problems with no failing sample"] = sum(1 for t in candidates if not failing[t])
    counts["problems with no passing sample"] = sum(1 for t in candidates if not passing[t])
    for t in tasks:
        rng = random.Random(f"{seed}:{t}")
        rng.shuffle(passing[t])
        rng.shuffle(failing[t])
    chosen = {t: [] if judge else passing[t][:pairs_per_problem] for t in tasks}
    while judge:  # one candidate per problem per round, until each has its pairs or runs out
        asks = [(t, passing[t].pop(0)) for t in tasks if len(chosen[t]) < pairs_per_problem and passing[t]]
        if not asks:
            break
        verdicts, _ = ask(judge, [make_request("judge", problems[t], s) for t, s in asks], parse_verdict,
                          max_attempts, counts)
        for (t, s), verdict in zip(asks, verdicts):
            if verdict:
                chosen[t].append(s)
            counts[{True: "judge: consistent", False: "judge: not consistent", None: "judge: no verdict"}[verdict]] += 1
    rows = [{"problem": problems[t]["prompt"], "chosen": c, "rejected": r, "task_id": t,
             "subset": problems[t].get("difficulty") or "lcb-rb"} for t in tasks for c, r in zip(chosen[t], failing[t])]
    counts["pairs"] = len(rows)
    return rows, counts


# -----------------------------------------------------------------------------
# Toy tasks: a procedural family of tiny Python problems, the world grpo.py trains in when no --model is given
#
# Every task is one template, a (filter, map, reducer) triple over a list of integers, with its parameters:
#     "Write f(xs): keep the numbers greater than 4, multiply each by 3, return their sum."
#     def f(xs):
#         return sum(x * 3 for x in xs if x > 4)
# The reference reasoning has one line per part of the template, each naming the piece of code it leads to, so a
# model a few million parameters big can learn the whole family in a minute or two of CPU training.
# Held out "by template": a fixed share of the triples (chosen from the seed, every filter, map and reducer still
# seen in training) never appears among the training tasks; held-out tasks are new combinations of known parts, not
# new instances of a known template and not unseen operations (which no tiny model could guess).

TOY_FILTERS = {  # name: (prompt phrase, condition), {k} is the task's parameter
    "even": ("the even numbers", "x % 2 == 0"),
    "odd": ("the odd numbers", "x % 2 == 1"),
    "positive": ("the positive numbers", "x > 0"),
    "negative": ("the negative numbers", "x < 0"),
    "greater": ("the numbers greater than {k}", "x > {k}"),
    "less": ("the numbers less than {k}", "x < {k}"),
}
TOY_MAPS = {  # name: (prompt phrase, expression)
    "add": ("add {k} to each", "x + {k}"),
    "subtract": ("subtract {k} from each", "x - {k}"),
    "multiply": ("multiply each by {k}", "x * {k}"),
    "square": ("square each", "x * x"),
    "negate": ("negate each", "-x"),
}
TOY_REDUCERS = {  # name: (prompt phrase, reasoning, code with {e}xpression and {c}ondition)
    "sum": ("return their sum", "sum() gives 0 if none", "sum({e} for x in xs if {c})"),
    "max": ("return the largest (0 if none)", "max() with default=0", "max(({e} for x in xs if {c}), default=0)"),
    "min": ("return the smallest (0 if none)", "min() with default=0", "min(({e} for x in xs if {c}), default=0)"),
    "list": ("return them as a list", "a list keeps the order", "[{e} for x in xs if {c}]"),
}
TOY_PYTHON = {  # the same semantics in Python, to compute expected outputs without running any generated code
    "even": lambda x, k: x % 2 == 0, "odd": lambda x, k: x % 2 == 1, "positive": lambda x, k: x > 0,
    "negative": lambda x, k: x < 0, "greater": lambda x, k: x > k, "less": lambda x, k: x < k,
    "add": lambda x, k: x + k, "subtract": lambda x, k: x - k, "multiply": lambda x, k: x * k,
    "square": lambda x, k: x * x, "negate": lambda x, k: -x,
    "sum": sum, "max": lambda v: max(v, default=0), "min": lambda v: min(v, default=0), "list": list,
}


def hold_out(templates, rng_key, heldout_fraction):
    """(train, held-out) templates (tuples of parts). Held-out ones are drawn from a shuffle seeded by rng_key,
    skipping any whose parts would then appear in fewer than 3 training templates: a held-out template is a new
    combination of parts the model has seen."""
    templates = list(templates)
    random.Random(rng_key).shuffle(templates)
    heldout, wanted = [], round(heldout_fraction * len(templates))
    for template in templates:
        train_left = [t for t in templates if t not in heldout and t != template]
        if len(heldout) < wanted and all(sum(part in t for t in train_left) >= 3 for part in template):
            heldout.append(template)
    return [t for t in templates if t not in heldout], heldout


def sample_tasks(splits, rng, options, make_task, per_template):
    """(train, held-out) tasks: for each template of each split, up to per_template of its options (parameter
    choices), each made into a task by make_task(template, *option, rng)."""
    tasks = []
    for templates in splits:
        tasks.append([])
        for template in templates:
            choices = options(template)
            tasks[-1] += [make_task(template, *c, rng) for c in rng.sample(choices, min(per_template, len(choices)))]
    return tasks[0], tasks[1]


def toy_templates(seed=0, heldout_fraction=0.2):
    """(train, held-out) lists of (filter, map, reducer) names (hold_out)."""
    triples = [(f, m, r) for f in TOY_FILTERS for m in TOY_MAPS for r in TOY_REDUCERS]
    return hold_out(triples, f"toy-templates:{seed}", heldout_fraction)


def toy_task(triple, k_filter, k_map, rng, n_cases=6):
    """One problem in the training format (load_problems), with execute.py call tests and a reference
    {reasoning, code}."""
    f, m, r = triple
    keep, condition = (s.format(k=k_filter) for s in TOY_FILTERS[f])
    change, expression = (s.format(k=k_map) for s in TOY_MAPS[m])
    give, think_give, code_template = TOY_REDUCERS[r]
    reasoning = "\n".join([f"Keep {keep}: {condition}.", f"Then {change}: {expression}.",
                           f"To {give.removesuffix(' (0 if none)')}: {think_give}."])
    code = f"def f(xs):\n    return {code_template.format(e=expression, c=condition)}"
    cases = []
    boundary = k_filter if "{k}" in TOY_FILTERS[f][0] else 0 if f in ("positive", "negative") else 1
    for case in range(n_cases):
        xs = [rng.randint(-9, 9) for _ in range(rng.randint(0, 7))]
        if case == 0:  # the filter's boundary value, so that an off-by-one condition (>= for >) fails a test
            xs.insert(rng.randint(0, len(xs)), boundary)
        kept = [TOY_PYTHON[m](x, k_map) for x in xs if TOY_PYTHON[f](x, k_filter)]
        cases.append({"args": [xs], "expected": TOY_PYTHON[r](kept)})
    uses_k = [k for part, k in ((f, k_filter), (m, k_map)) if "{k}" in (TOY_FILTERS.get(part) or TOY_MAPS[part])[0]]
    task_id = f"toy/{f}-{m}-{r}" + "".join(f"-{k}" for k in uses_k)
    return {"task_id": task_id, "prompt": f"Write f(xs): keep {keep}, {change}, {give}.\n",
            "template": "-".join(triple), "tests": {"type": "call", "fn_name": "f", "cases": cases},
            **toy_weak_and_strong_tests(triple, k_filter, k_map, boundary, cases, random.Random(f"toy-weak:{task_id}")),
            "reference": {"reasoning": reasoning, "code": code}}


def toy_weak_and_strong_tests(triple, k_filter, k_map, boundary, cases, rng, n_weak=3, n_plus=4):
    """Two more test sets, for grpo.py's weak-tests world, drawn from their own rng so that `tests` stays the same:
    weak_tests, like a scraped dataset's few asserts: 3 random lists that never hold the filter's boundary value, so
    a condition slipped at the boundary (>= for >) passes them (the other parity still fails); strong_tests, like
    EvalPlus's plus tests: `cases` and 4 more lists around the boundary value (it, its neighbours, a random rest)."""
    f, m, r = triple
    expected = lambda xs: TOY_PYTHON[r]([TOY_PYTHON[m](x, k_map) for x in xs if TOY_PYTHON[f](x, k_filter)])
    weak = [[x for x in (rng.randint(-9, 9) for _ in range(rng.randint(2, 7))) if x != boundary]
            for _ in range(n_weak)]
    plus = [[boundary], [boundary - 1, boundary, boundary + 1]]
    plus += [[boundary] + [rng.randint(-9, 9) for _ in range(rng.randint(1, 5))] for _ in range(n_plus - len(plus))]
    spec = lambda lists: {"type": "call", "fn_name": "f", "cases": [{"args": [xs], "expected": expected(xs)}
                                                                    for xs in lists]}
    return {"weak_tests": spec(weak), "strong_tests": dict(spec(plus), cases=cases + spec(plus)["cases"])}


def toy_tasks(seed=0, per_template=5, heldout_fraction=0.2):
    """The toy world's problems, deterministic from the seed: (train, held_out), up to `per_template` tasks per
    template, each with its own parameters (1..9) and tests. Tests call f on random lists of -9..9 with 0 to 7
    elements (the first one also holds the filter's boundary value); expected outputs are computed from the
    template's meaning."""
    def parameters(triple):  # (filter k, map k); 0 where the part takes none
        return [(a, b) for a in (range(1, 10) if "{k}" in TOY_FILTERS[triple[0]][0] else [0])
                for b in (range(1, 10) if "{k}" in TOY_MAPS[triple[1]][0] else [0])]

    return sample_tasks(toy_templates(seed, heldout_fraction), random.Random(f"toy-tasks:{seed}"), parameters,
                        toy_task, per_template)


# -----------------------------------------------------------------------------
# Toy math: arithmetic word problems, the toy world of the paper's math experiment (grpo.py --toy-task math)
#
# A template is a chain of 2 or 3 operations applied to a starting amount, with its numbers:
#     "Ann has 6 marbles. Then Ann finds 3 more. Then Ann splits them into 3 equal piles and keeps one pile.
#      How many marbles does Ann have now?"
#     reasoning: "Ann starts with 6 marbles.\nFinds 3 more: 6 + 3 = 9.\nOne of 3 equal piles: 9 / 3 = 3.\n
#                 So Ann has 3 marbles."   answer: \boxed{3}
# Numbers stay small (every amount 1..20, steps of 1..6, factors 2..3), so a model of a few million parameters can
# learn the arithmetic; held out by chain, so that held-out problems are orders of operations never trained on.

TOY_MATH_OPS = {  # name: (story sentence, reasoning step, Python meaning; None where the step is not allowed)
    "add": ("Then {name} finds {k} more.", "Finds {k} more: {a} + {k} = {b}.", lambda a, k: a + k),
    "sub": ("Then {name} loses {k}.", "Loses {k}: {a} - {k} = {b}.", lambda a, k: a - k),
    "mul": ("Then {name}'s pile grows to {k} times its size.", "{k} times as many: {a} * {k} = {b}.",
            lambda a, k: a * k),
    "div": ("Then {name} splits them into {k} equal piles and keeps one pile.", "One of {k} equal piles: "
            "{a} / {k} = {b}.", lambda a, k: a // k if a % k == 0 else None),
}
TOY_MATH_STEPS = {"add": range(1, 7), "sub": range(1, 7), "mul": (2, 3), "div": (2, 3)}
TOY_MATH_NAMES = ["Ann", "Ben", "Cal", "Dee", "Eve", "Finn", "Gus", "Hana"]
TOY_MATH_ITEMS = ["apples", "marbles", "coins", "cards", "stickers", "shells"]


def toy_math_templates(seed=0, heldout_fraction=0.2):
    """(train, held-out) operation chains of length 2 and 3 (hold_out)."""
    chains = [c for n in (2, 3) for c in itertools.product(TOY_MATH_OPS, repeat=n)]
    return hold_out(chains, f"toy-math-templates:{seed}", heldout_fraction)


def toy_math_values(chain, start, ks):
    """The amounts after each step, or None when a step leaves 1..20 or a division is not exact."""
    values = [start]
    for op, k in zip(chain, ks):
        b = TOY_MATH_OPS[op][2](values[-1], k)
        if b is None or not 1 <= b <= 20:
            return None
        values.append(b)
    return values


def toy_math_task(chain, start, ks, rng):
    name, items = rng.choice(TOY_MATH_NAMES), rng.choice(TOY_MATH_ITEMS)
    values = toy_math_values(chain, start, ks)
    story = [f"{name} has {start} {items}."] + [TOY_MATH_OPS[op][0].format(name=name, k=k) for op, k in zip(chain, ks)]
    steps = [f"{name} starts with {start} {items}."] + [
        TOY_MATH_OPS[op][1].format(k=k, a=a, b=b) for op, k, a, b in zip(chain, ks, values, values[1:])]
    answer = str(values[-1])
    return {"task_id": f"toymath/{'-'.join(chain)}/{start}-{'-'.join(map(str, ks))}", "task": "math",
            "prompt": " ".join(story) + f" How many {items} does {name} have now?\n", "answer": answer,
            "template": "-".join(chain),
            "reference": {"reasoning": "\n".join(steps + [f"So {name} has {answer} {items}."]), "answer": answer}}


def toy_math_tasks(seed=0, per_template=5, heldout_fraction=0.2):
    """The toy math world's problems, deterministic from the seed: (train, held_out), up to `per_template` tasks per
    chain, each with its own numbers (starting amounts 2..9)."""
    def numbers(chain):  # (starting amount, step sizes) that keep every amount in 1..20
        return [(start, ks) for start in range(2, 10) for ks in itertools.product(*(TOY_MATH_STEPS[op] for op in chain))
                if toy_math_values(chain, start, ks)]

    return sample_tasks(toy_math_templates(seed, heldout_fraction), random.Random(f"toy-math-tasks:{seed}"), numbers,
                        toy_math_task, per_template)


# -----------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="sample completions for one or more prompts")
    gen.add_argument("--model", required=True, help="hub id or local directory")
    gen.add_argument("--prompt", action="append", required=True, help="user message; repeat for several prompts")
    gen.add_argument("--system", default=None, help="system message (chat template only)")
    gen.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    gen.add_argument("-n", type=int, default=1, help="samples per prompt")
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--stop", action="append", default=[], help="stop string; repeat for several")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on GPU, fp32 on CPU)")
    gen.add_argument("--device", default=None)
    gen.add_argument("--trust-remote-code", action="store_true")
    gen.add_argument("--no-cuda-graphs", action="store_true", help="decode without CUDA graphs")
    shared = argparse.ArgumentParser(add_help=False)  # teacher, sandbox and model settings of crpl and lcb-rb
    shared.add_argument("--teacher-model", help="model name an HTTP teacher or judge serves")
    shared.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    shared.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight")
    shared.add_argument("--rate", type=float, default=0.0, help="most HTTP requests started per second (0: no limit)")
    shared.add_argument("--retries", type=int, default=6, help="HTTP retries on 429, 5xx and network errors")
    shared.add_argument("--request-timeout", type=float, default=600.0, help="seconds per HTTP request")
    shared.add_argument("--teacher-temperature", type=float, default=0.7)
    shared.add_argument("--teacher-max-tokens", type=int, default=4096)
    shared.add_argument("--max-attempts", type=int, default=3, help="times a malformed reply is asked for in all")
    shared.add_argument("--exec-timeout", type=float, default=None, help="seconds per test case (crpl 3, lcb-rb 6)")
    shared.add_argument("--exec-workers", type=int, default=None, help="sandbox processes (default: one per core)")
    shared.add_argument("--exec-memory-mb", type=int, default=4096)
    shared.add_argument("--seed", type=int, default=0)
    shared.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32, for local models")
    shared.add_argument("--device", default=None)
    crpl = commands.add_parser("crpl", parents=[shared], help="optimized and degraded reasoning for each problem")
    crpl.add_argument("--problems", required=True, nargs="+", help="JSONL problems in the training format")
    crpl.add_argument("--teacher", required=True, help="toy | local:PATH | http(s)://HOST/v1")
    crpl.add_argument("--out", required=True, help="CRPL records (JSONL), appended to: a rerun resumes")
    crpl.add_argument("--failures", default=None, help="problems and replies not written as data (default: "
                                                        "OUT with .failures.jsonl)")
    crpl.add_argument("--chunk", type=int, default=32, help="problems per round of teacher calls and test runs")
    crpl.add_argument("--max-similarity", type=float, default=0.99,
                      help="difflib ratio to the original from which a variant counts as a copy and is dropped")
    lcb = commands.add_parser("lcb-rb", parents=[shared], help="LCB-RB pairs from sampled LiveCodeBench solutions")
    lcb.add_argument("--data", default=None, help="LiveCodeBench JSONL file(s), comma-separated (default: download)")
    lcb.add_argument("--lcb-version", default="release_v6", help="release to download when no --data")
    lcb.add_argument("--start-date", default=None, help="first contest date, YYYY-MM-DD")
    lcb.add_argument("--end-date", default=None, help="last contest date, YYYY-MM-DD")
    lcb.add_argument("--samples", default=None, help="sampled outputs, evaluate.py's samples.jsonl format (task_id, "
                                                     "raw_output); with --model, generated into it (default: "
                                                     "OUT with .samples.jsonl), skipping tasks that have them")
    lcb.add_argument("--model", default=None, help="sample the solutions with this model (hub id or directory)")
    lcb.add_argument("-n", type=int, default=16, help="samples per problem (the paper: 50)")
    lcb.add_argument("--temperature", type=float, default=1.0)
    lcb.add_argument("--top-p", type=float, default=1.0)
    lcb.add_argument("--max-new-tokens", type=int, default=4096)
    lcb.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call")
    lcb.add_argument("--pairs-per-problem", type=int, default=1)
    lcb.add_argument("--judge", default=None, help="teacher that must find a chosen reasoning correct and "
                                                   "consistent with its code: local:PATH or http(s)://HOST/v1")
    lcb.add_argument("--out", required=True, help="pairs (JSONL), rewritten")
    args = parser.parse_args(argv)
    if args.command == "lcb-rb" and not args.model and not (args.samples and os.path.exists(args.samples)):
        parser.error(f"lcb-rb needs --model PATH or an existing --samples FILE (got {args.samples!r})")
    return args


def teacher_from_args(spec, args):
    """make_teacher, or one line naming what is wrong with the teacher or judge flag."""
    try:
        return make_teacher(spec, args) if spec else None
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")


def exec_settings(args, timeout):
    return dict(exec_timeout=args.exec_timeout or timeout, exec_workers=args.exec_workers,
                exec_memory_mb=args.exec_memory_mb)


def cmd_generate(args):
    try:
        model, tokenizer = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
    except OSError as e:
        raise SystemExit(f"error: {e}")
    prompts = [p if args.raw else format_prompt(tokenizer, p, args.system) for p in args.prompt]
    start = time.perf_counter()
    samples = generate(model, tokenizer, prompts, n=args.n, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, stop=args.stop,
                       seed=args.seed, cuda_graphs=not args.no_cuda_graphs)
    seconds = time.perf_counter() - start
    for index, sample in enumerate(samples):
        print(f"--- prompt {sample.prompt_index} sample {index % args.n}: {len(sample.token_ids)} tokens, "
              f"finish={sample.finish_reason}, mean logprob="
              f"{sum(sample.logprobs) / max(1, len(sample.logprobs)):.3f}\n{sample.text}")
    n_tokens = sum(len(s.token_ids) for s in samples)
    print(f"--- {len(samples)} samples, {n_tokens} tokens in {seconds:.2f}s ({n_tokens / seconds:.1f} tokens/s)")


def cmd_crpl(args):
    teacher = teacher_from_args(args.teacher, args)
    try:
        synthesize(load_problems(args.problems), teacher, args.out, args.failures, args.seed, args.chunk,
                   args.max_attempts, args.max_similarity, **exec_settings(args, 3.0))
    except (TeacherError, ValueError) as e:
        raise SystemExit(f"error: {e}\n(finished problems are saved: the same command resumes)")


def cmd_lcb_rb(args):
    judge = teacher_from_args(args.judge, args)
    problems = {p["task_id"]: p for p in load_benchmark("livecodebench", args.data, lcb_version=args.lcb_version,
                                                        start_date=args.start_date, end_date=args.end_date)[0]}
    samples_path = Path(args.samples or os.path.splitext(args.out)[0] + ".samples.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    if args.model:
        generate_samples(problems, argparse.Namespace(
            model=args.model, n=args.n, dtype=args.dtype, device=args.device, family="lcb", prompt_format="recode",
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_p=args.top_p, seed=args.seed, no_cuda_graphs=False), samples_path)
    try:
        rows, counts = lcb_rb_pairs(problems, load_samples(samples_path, set(problems)), judge,
                                    args.pairs_per_problem, args.seed, args.max_attempts, **exec_settings(args, 6.0))
    except TeacherError as e:
        raise SystemExit(f"error: {e}")
    with open(args.out, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"lcb-rb: {len(problems)} problems, {len(rows)} pairs -> {args.out}")
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")


COMMANDS = {"generate": cmd_generate, "crpl": cmd_crpl, "lcb-rb": cmd_lcb_rb}


def main(argv=None):
    args = parse_args(argv)
    print(vars(args))
    COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
