"""
synth.py: model loading and the generation engine that every stage samples with.

Sampling is the first thing the pipeline does and the bulk of a GRPO step's wall time, so it lives here and the other
stages import it: `from synth import load_model, format_prompt, generate, Sample`.

The engine is a hand-written batched KV-cache loop around the model's own forward (no `model.generate`):
- one prefill per distinct prompt (left-padded into one batch), its KV cache then copied to the n sample rows, so the
  G samples of a GRPO group never recompute their prompt;
- full-attention layers write into KV buffers preallocated for prompt + completion: no per-step reallocation or copy;
- sampling on the model's device with a seeded torch.Generator (temperature 0 = greedy, top-k, top-p); the log-prob
  returned for each token is log_softmax(logits / T) before top-k/top-p, the number grpo.py trains on;
- rows finish independently on any EOS id (generation_config and tokenizer) or a stop string; the host looks at the
  device only every `sync_every` steps, and then drops finished rows from the batch and the cache;
- under torchrun with sharded weights (FSDP), `lockstep` keeps every rank calling forward until all ranks are done.

Try it by hand:
    python synth.py generate --model Qwen/Qwen2.5-Coder-1.5B-Instruct --prompt "Reverse a list in Python." -n 4
    python synth.py generate --model PATH --prompt "def fib(n):" --raw --temperature 0 --max-new-tokens 64
    HF_HUB_OFFLINE=1 python synth.py generate --model PATH ...  # no network: a local save_pretrained directory
Tests and benchmark:
    python -m pytest -q tests/test_synth.py
    python bench/bench_generate.py         # engine vs model.generate, CPU, random-init ~4M Qwen2
    python bench/bench_generate.py --gpu   # random-init Qwen2.5-1.5B config, bf16, GPU; plus memory-bandwidth use
"""

import argparse
import functools
import inspect
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.cache_utils import DynamicCache, DynamicLayer

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
    finish_reason: str         # "eos" | "stop" | "length"
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


def sample_next_token(logits, temperature, top_k, top_p, generator):
    """One token per row, all on the logits' device. Returns (tokens, log-probs of those tokens)."""
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, logits.gather(-1, tokens[:, None]).squeeze(-1) - logits.logsumexp(-1)
    probs = (logits / temperature).softmax(-1)
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
    uniform = torch.rand((cdf.shape[0], 1), generator=generator, device=cdf.device) * cdf[:, -1:]
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


@torch.no_grad()
def generate(model, tokenizer, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0, stop=(), seed=0,
             lockstep=None, sync_every=16):
    """Sample n completions for each prompt (strings, already formatted). Returns len(prompts) * n Samples,
    prompt-major: sample j of prompt i at index i * n + j. Callers batch prompts to fit memory: the cache holds
    len(prompts) * n rows of (longest prompt + max_new_tokens) tokens.

    lockstep: every rank keeps calling forward (a dummy row once its own rows are done) until all ranks are done,
    which sharded weights (FSDP) need because each forward is a collective; None = on when the model is FSDP-sharded.
    sync_every: the host reads the device (finished rows, stop strings, the lockstep all-reduce) every this many steps.
    """
    stop = (stop,) if isinstance(stop, str) else tuple(stop)  # stop="\n\n" must not become one stop per character
    if n < 1 or max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or sync_every < 1:
        raise ValueError(f"bad sampling settings: n={n} max_new_tokens={max_new_tokens} temperature={temperature} "
                         f"top_p={top_p} top_k={top_k} sync_every={sync_every}")
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
                         lockstep, sync_every)
    finally:
        model.train(was_training)


def _generate(model, tokenizer, prompts, n, max_new_tokens, temperature, top_p, top_k, stop, seed, lockstep,
              sync_every):
    device = next(model.parameters()).device
    forward_args = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in forward_args else "past_key_values"  # transformers renamed it in 5.x
    last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
    eos_ids = eos_token_ids(model, tokenizer)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]

    # Prefill: each distinct prompt once, left-padded so that every row's next token goes to the same cache column.
    distinct = list(dict.fromkeys(prompts))
    distinct_ids = [encode_prompt(tokenizer, p) for p in distinct]
    for text, ids in zip(distinct, distinct_ids):
        if not ids:
            raise ValueError(f"prompt {prompts.index(text)} encodes to no tokens")
    prompt_len = max(len(ids) for ids in distinct_ids)
    input_ids = torch.full((len(distinct), prompt_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(distinct), prompt_len), dtype=torch.bool)
    for i, ids in enumerate(distinct_ids):
        input_ids[i, prompt_len - len(ids):] = torch.tensor(ids)
        prompt_mask[i, prompt_len - len(ids):] = True
    input_ids, prompt_mask = input_ids.to(device), prompt_mask.to(device)
    cache = new_cache(model, prompt_len + max_new_tokens)
    out = model(input_ids=input_ids, attention_mask=prompt_mask, position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, **{cache_arg: cache}, **last_logits_only)

    # Replicate to rows: row r is sample r % n of prompt r // n.
    position = {p: i for i, p in enumerate(distinct)}
    source = torch.tensor([position[p] for p in prompts for _ in range(n)], device=device)
    cache.batch_select_indices(source)
    logits = out.logits[:, -1][source]
    del out
    attention = torch.ones((len(source), prompt_len + max_new_tokens), dtype=torch.bool, device=device)
    attention[:, :prompt_len] = prompt_mask[source]
    next_position = prompt_mask.sum(-1)[source]
    # sdpa takes a ready (rows, 1, 1, kv) boolean mask; handing one over skips transformers' per-step mask building,
    # which also reads the mask back to the host. Other attention kernels, or sliding layers, get the 2D mask.
    ready_mask = model.config._attn_implementation == "sdpa" and all(
        isinstance(layer, PreallocatedLayer) for layer in cache.layers)

    # Decode. Host-side state per original row; device-side state per row of the current (shrinking) batch.
    rows = list(range(len(source)))
    out_tokens, out_logprobs = [[] for _ in rows], [[] for _ in rows]
    finish_reason = [None] * len(rows)
    checked = [0] * len(rows)  # tokens already searched for stop strings
    chunk_tokens = torch.empty((len(rows), sync_every), dtype=torch.long, device=device)
    chunk_logprobs = torch.empty((len(rows), sync_every), dtype=torch.float, device=device)
    eos_at = torch.zeros(len(rows), dtype=torch.long, device=device)  # length up to the first EOS, 0 = none yet
    generator = torch.Generator(device=device).manual_seed(seed)
    step, running = 0, True
    while True:
        if running:
            tokens, logprobs = sample_next_token(logits, temperature, top_k, top_p, generator)
            chunk_tokens[:, step % sync_every], chunk_logprobs[:, step % sync_every] = tokens, logprobs
            eos_at = torch.where((eos_at == 0) & torch.isin(tokens, eos), step + 1, eos_at)
        step += 1

        if running and (step % sync_every == 0 or step == max_new_tokens):
            # The only host<->device sync: collect the chunk, finish rows, drop them from the batch.
            filled = (step - 1) % sync_every + 1
            new_tokens, new_logprobs = chunk_tokens[:, :filled].tolist(), chunk_logprobs[:, :filled].tolist()
            keep = []
            for i, (row, eos_length) in enumerate(zip(rows, eos_at.tolist())):
                out_tokens[row] += new_tokens[i]
                out_logprobs[row] += new_logprobs[i]
                if eos_length:
                    del out_tokens[row][eos_length:], out_logprobs[row][eos_length:]
                    finish_reason[row] = "eos"
                if stop:
                    stop_length = find_stop(tokenizer, out_tokens[row], stop, checked[row])
                    checked[row] = len(out_tokens[row])
                    if stop_length is not None:
                        del out_tokens[row][stop_length:], out_logprobs[row][stop_length:]
                        finish_reason[row] = "stop"
                if finish_reason[row] is None and step == max_new_tokens:
                    finish_reason[row] = "length"
                if finish_reason[row] is None:
                    keep.append(i)
            if len(keep) < len(rows) and keep:
                # Compact: later steps cost only what the unfinished rows need.
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                tokens, attention, next_position = tokens[index], attention[index], next_position[index]
                eos_at, chunk_tokens, chunk_logprobs = eos_at[index], chunk_tokens[index], chunk_logprobs[index]
                rows = [rows[i] for i in keep]
            running = bool(keep)

        if lockstep and step % sync_every == 0:
            anyone_running = torch.tensor([int(running)], device=device)
            dist.all_reduce(anyone_running, op=dist.ReduceOp.MAX)
            if not anyone_running.item():
                break
        elif not lockstep and not running:
            break

        if running:
            mask = attention[:, :prompt_len + step]
            out = model(input_ids=tokens[:, None], attention_mask=mask[:, None, None, :] if ready_mask else mask,
                        position_ids=(next_position + step - 1)[:, None], use_cache=True, **{cache_arg: cache},
                        **last_logits_only)
            logits = out.logits[:, -1]
        else:  # lockstep, this rank is done: a forward on a dummy row keeps the other ranks' collectives matched
            model(input_ids=torch.full((1, 1), pad_id, device=device), use_cache=False, **last_logits_only)

    samples = []
    for row in range(len(out_tokens)):
        ids, reason = out_tokens[row], finish_reason[row]
        text = tokenizer.decode(ids[:-1] if reason == "eos" else ids, skip_special_tokens=True)
        if reason == "stop":
            text = text[:min(text.find(s) for s in stop if s in text)]
        samples.append(Sample(prompt_index=row // n, text=text, token_ids=ids, logprobs=out_logprobs[row],
                              finish_reason=reason, prompt_token_ids=distinct_ids[position[prompts[row // n]]]))
    return samples


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
# Command line

def main():
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
    args = parser.parse_args()
    print(vars(args))

    if args.command == "generate":
        try:
            model, tokenizer = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
        except OSError as e:
            raise SystemExit(f"error: {e}")
        prompts = [p if args.raw else format_prompt(tokenizer, p, args.system) for p in args.prompt]
        start = time.perf_counter()
        samples = generate(model, tokenizer, prompts, n=args.n, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, stop=args.stop,
                           seed=args.seed)
        seconds = time.perf_counter() - start
        for index, sample in enumerate(samples):
            print(f"--- prompt {sample.prompt_index} sample {index % args.n}: {len(sample.token_ids)} tokens, "
                  f"finish={sample.finish_reason}, mean logprob="
                  f"{sum(sample.logprobs) / max(1, len(sample.logprobs)):.3f}\n{sample.text}")
        n_tokens = sum(len(s.token_ids) for s in samples)
        print(f"--- {len(samples)} samples, {n_tokens} tokens in {seconds:.2f}s ({n_tokens / seconds:.1f} tokens/s)")


if __name__ == "__main__":
    main()
