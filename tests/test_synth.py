"""
Tests for synth.py: model loading, prompt formatting and the generation engine, on tiny random models built from a
config (Qwen2 and Llama) with a tokenizer trained here; problem files, benchmark loaders, prompts, code extraction and
the math checker on small fixtures; CRPL synthesis (toy, HTTP and local teachers, filters, resume)
and LCB-RB pair building on small fixtures, with a chat-completions server on 127.0.0.1. No downloads.

    python -m pytest -q tests/test_synth.py
"""

import base64
import datetime
import json
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import synth  # noqa: E402
from synth import (DEGRADATIONS, TOY_DIGRESSIONS, TOY_FALSE_FACTS, TOY_LEAPS, TOY_SWAPS, HTTPTeacher,  # noqa: E402
                   LocalTeacher, MalformedReply, Sample, TeacherError, ToyTeacher, eos_token_ids, format_prompt,
                   generate, lcb_rb_pairs, load_model, main, make_request, parse_solution, split_steps, synthesize,
                   tiny_model, train_tiny_tokenizer)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    "    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "the quick brown fox jumps over the lazy dog. The end.\n",
    "import sys\nn = int(sys.stdin.readline())\nprint(sum(range(n)))\n",
] * 20
# different lengths in one batch, and a duplicate (one prefill, two groups of samples)
PROMPTS = ["def add(a, b):", "the quick brown fox jumps over the lazy", "for", "def add(a, b):",
           "class Stack:\n    def push(self, x):"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer(CORPUS, vocab_size=400)


def peaked_model(tokenizer, arch="qwen2", attn_implementation="sdpa"):
    # a large init makes the logits peaked, so greedy decoding has no near-ties that float noise could flip
    return tiny_model(tokenizer, arch, seed=0, attn_implementation=attn_implementation, initializer_range=0.3)


def reference_generate(model, tokenizer, prompts, max_new_tokens):
    """model.generate, greedy, on the left-padded batch: completions as lists of token ids (pads removed)."""
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
    completions = out[:, batch["input_ids"].shape[1]:].tolist()
    eos = set(eos_token_ids(model, tokenizer))
    result = []
    for ids in completions:  # cut after the first EOS: model.generate pads finished rows from there on
        end = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
        result.append(ids[:end])
    return result


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("llama", "eager")])
def test_greedy_matches_model_generate_token_for_token(tokenizer, arch, attn):
    model = peaked_model(tokenizer, arch, attn)
    max_new = 24
    plain = reference_generate(model, tokenizer, PROMPTS, max_new)
    # A second EOS id, taken from the middle of the first completion: rows now end at different steps (several EOS ids
    # per model, per-row finishing, dropping finished rows from the batch and cache all get exercised).
    extra_eos = plain[0][5]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, extra_eos]
    expected = reference_generate(model, tokenizer, PROMPTS, max_new)
    n = 3
    samples = generate(model, tokenizer, PROMPTS, n=n, max_new_tokens=max_new, temperature=0, sync_every=4)

    assert len(samples) == len(PROMPTS) * n
    lengths = set()
    for index, sample in enumerate(samples):
        assert sample.prompt_index == index // n
        assert sample.token_ids == expected[index // n], f"row {index} ({arch})"
        lengths.add(len(sample.token_ids))
        if sample.token_ids[-1] in (tokenizer.eos_token_id, extra_eos):
            assert sample.finish_reason == "eos"
            assert sample.text == tokenizer.decode(sample.token_ids[:-1], skip_special_tokens=True)
        else:
            assert sample.finish_reason == "length" and len(sample.token_ids) == max_new
    assert len(lengths) > 1, "rows should end at different steps"
    assert samples[0].finish_reason == "eos" and len(samples[0].token_ids) <= 6


def test_stop_strings_end_rows_where_the_string_completes(tokenizer):
    model = peaked_model(tokenizer)
    free = generate(model, tokenizer, PROMPTS, n=1, max_new_tokens=30, temperature=0)
    text = free[0].text
    stop = text[6:9]  # a string the first completion produces; where it first appears is where that row must end
    assert stop and stop not in text[:6 + len(stop) - 1]
    never = "@@never@@"
    stopped = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=30, temperature=0, stop=[never, stop],
                       sync_every=4)
    for index, sample in enumerate(stopped):
        reference = free[index // 2]
        assert sample.token_ids == reference.token_ids[:len(sample.token_ids)]
        if stop in reference.text:
            assert sample.finish_reason == "stop"
            assert sample.text == reference.text[:reference.text.find(stop)]
            # the kept tokens are exactly those up to the one that completes the stop string
            assert stop in tokenizer.decode(sample.token_ids) and stop not in tokenizer.decode(sample.token_ids[:-1])
        else:
            assert sample.finish_reason == reference.finish_reason and sample.text == reference.text
    assert stopped[0].finish_reason == "stop"
    # a single string is one stop string, not one per character
    assert generate(model, tokenizer, PROMPTS[:1], max_new_tokens=30, temperature=0, stop=stop)[0].text == \
        stopped[0].text


@pytest.mark.parametrize("max_new", [1, 5, 17])
def test_max_new_tokens_is_never_exceeded(tokenizer, max_new):
    model = tiny_model(tokenizer, "qwen2")
    samples = generate(model, tokenizer, PROMPTS, n=4, max_new_tokens=max_new, temperature=1.0, seed=3, sync_every=4)
    for sample in samples:
        assert 1 <= len(sample.token_ids) <= max_new
        assert len(sample.logprobs) == len(sample.token_ids)
        assert (sample.finish_reason == "length") == (len(sample.token_ids) == max_new and
                                                      sample.token_ids[-1] != tokenizer.eos_token_id)
    assert any(s.finish_reason == "length" for s in samples)


def test_seeded_sampling_is_reproducible(tokenizer):
    model = tiny_model(tokenizer, "llama")
    settings = dict(n=3, max_new_tokens=12, temperature=0.9, top_p=0.95, top_k=50)
    first = generate(model, tokenizer, PROMPTS, seed=7, **settings)
    again = generate(model, tokenizer, PROMPTS, seed=7, **settings)
    other = generate(model, tokenizer, PROMPTS, seed=8, **settings)
    assert [(s.token_ids, s.logprobs) for s in first] == [(s.token_ids, s.logprobs) for s in again]
    assert [s.token_ids for s in first] != [s.token_ids for s in other]
    # the n samples of a prompt are independent draws, not copies
    assert len({tuple(s.token_ids) for s in first[:3]}) > 1
    assert first[0].prompt_token_ids == tokenizer(PROMPTS[0])["input_ids"]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 20, 0.9), (1.3, 0, 1.0), (0.0, 0, 1.0)])
def test_logprobs_equal_a_fresh_forward_pass(tokenizer, temperature, top_k, top_p):
    model = tiny_model(tokenizer, "qwen2", initializer_range=0.1)
    samples = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=16, temperature=temperature, top_k=top_k,
                       top_p=top_p, seed=1, sync_every=4)
    for sample in samples:
        torch.testing.assert_close(torch.tensor(sample.logprobs), forward_logprobs(model, sample, temperature),
                                   atol=1e-4, rtol=0)


def forward_logprobs(model, sample, temperature):
    """The sample's log-probs from one fresh forward over prompt + completion: log_softmax(logits / T) before
    top-k/top-p, the numbers GRPO trains on (raw logits when greedy)."""
    ids = sample.prompt_token_ids + sample.token_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    start = len(sample.prompt_token_ids) - 1
    logits = logits[start:start + len(sample.token_ids)]
    logprobs = (logits / temperature if temperature > 0 else logits).log_softmax(-1)
    return logprobs.gather(-1, torch.tensor(sample.token_ids)[:, None]).squeeze(-1)


# qwen3 adds RMSNorm on queries and keys; mistral without a sliding window is llama's layout; the llama case uses a
# rope scaling (llama3) that the fast path must take from the model's own rotary module
FAST_ARCHS = {"qwen2": {}, "llama": dict(rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                                               low_freq_factor=1.0, high_freq_factor=4.0,
                                                               original_max_position_embeddings=16)),
              "qwen3": dict(head_dim=16), "mistral": dict(sliding_window=None)}


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_fast_decode_step_matches_the_models_own_forward(tokenizer, arch):
    """The decode step written out from the weights against the model's forward, step by step: the same greedy
    tokens, log-probs within 1e-5 (fp32, plus 2e-6 relative), across left padding, several EOS ids and rows dropped
    from the batch."""
    model = tiny_model(tokenizer, arch, initializer_range=0.3, **FAST_ARCHS[arch])
    cache = synth.new_cache(model, 8)
    assert synth.fast_decode_step(model, cache, 8) is not None, f"{arch} should take the fast path"
    settings = dict(n=2, max_new_tokens=24, sync_every=4)
    first = generate(model, tokenizer, PROMPTS, temperature=0, fast=False, **settings)
    # more EOS ids, taken from inside completions: rows end at different steps and are dropped from the batch
    middles = [s.token_ids[len(s.token_ids) // 2] for s in first[::4] if len(s.token_ids) > 4]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + middles
    for temperature in (0.0, 1.0):
        fast = generate(model, tokenizer, PROMPTS, temperature=temperature, seed=5, fast=True, static=False,
                        **settings)   # the growing cache; tests/test_engine.py tests the static step
        slow = generate(model, tokenizer, PROMPTS, temperature=temperature, seed=5, fast=False, **settings)
        assert [s.token_ids for s in fast] == [s.token_ids for s in slow]
        assert temperature or len({len(s.token_ids) for s in fast}) > 1, "rows should end at different steps"
        for a, b in zip(fast, slow):  # log-probs of this peaked model reach -10; fp32 rounding there depends on
            # the CPU's kernels (AVX-512 machines reach 1.2e-5 at -3.2 on mistral), hence the relative term
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=2e-6)


@pytest.mark.parametrize("weights", ["bf16", "fp32 under bf16 autocast"])  # the second is grpo.py's bf16 mode
def test_fast_decode_step_in_bf16_stays_close(tokenizer, weights):
    dtype = torch.bfloat16 if weights == "bf16" else torch.float32
    model = tiny_model(tokenizer, "qwen2", initializer_range=0.3, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=weights != "bf16"):
        fast = generate(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=0, fast=True)
        slow = generate(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=0, fast=False)
    for a, b in zip(fast, slow):  # bf16 rounds differently in the two orders of operations; the first token agrees
        assert a.token_ids[0] == b.token_ids[0]
        assert abs(a.logprobs[0] - b.logprobs[0]) < 0.05


def test_models_the_fast_step_cannot_run_use_their_own_forward(tokenizer):
    """A sliding window, a hooked module (offloading, adapters), a custom linear layer, or an architecture outside
    PLAIN_DECODERS: None, and generate() then calls the model's forward at each step."""
    sliding = tiny_model(tokenizer, "mistral", sliding_window=4)
    hooked = tiny_model(tokenizer, "qwen2")
    hooked.model.layers[0].mlp.register_forward_hook(lambda module, args, out: out * 0.5)
    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", vocab_size=len(tokenizer), n_embd=32,
                                                                 n_layer=1, n_head=2))
    custom = tiny_model(tokenizer, "qwen2")  # a layer of another class (as quantization libraries make)
    custom.model.layers[1].mlp.up_proj.__class__ = type("QuantLinear", (torch.nn.Linear,), {})
    for model in (sliding, hooked, gpt2, custom):
        assert synth.fast_decode_step(model, synth.new_cache(model, 8), 8) is None
    # the hook changes the model's output, and generation follows it: the forward was used
    plain = tiny_model(tokenizer, "qwen2")
    hooked_out = generate(hooked, tokenizer, PROMPTS, max_new_tokens=6, temperature=0)
    plain_out = generate(plain, tokenizer, PROMPTS, max_new_tokens=6, temperature=0)
    assert [s.logprobs for s in hooked_out] != [s.logprobs for s in plain_out]
    assert generate(gpt2, tokenizer, PROMPTS[:2], max_new_tokens=4, temperature=0)[0].finish_reason in ("eos", "length")


def word_level_model():
    """A 16-word vocabulary: the first-token distribution can then be checked against softmax with few draws."""
    words = ["<eos>", "<pad>"] + "a b c d e f g h i j k l m n".split()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")
    model = tiny_model(tokenizer, "qwen2", seed=2, hidden_size=32, intermediate_size=64, initializer_range=0.5)
    return model, tokenizer


def test_first_token_distribution_matches_softmax():
    model, tokenizer = word_level_model()
    prompt, temperature, draws = "a b c", 0.8, 20000
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1].float()
    vocab = logits.shape[0]

    def empirical(**settings):
        samples = generate(model, tokenizer, [prompt], n=draws, max_new_tokens=1, temperature=temperature, seed=5,
                           **settings)
        first = torch.tensor([s.token_ids[0] for s in samples])
        return torch.bincount(first, minlength=vocab).float() / draws

    # top_k=0, top_p=1: plain softmax(logits / T). The sampling noise in total variation is below 0.01 at 20000 draws
    # over 16 tokens (about sum of sqrt(p / N)); sampling at T=1 or T=0.6 instead of 0.8 is 0.07-0.09 away here.
    target = (logits / temperature).softmax(-1)
    assert 0.5 * (empirical() - target).abs().sum() < 0.02
    # top_k: only the k best tokens, renormalised
    best3 = logits.topk(3).indices
    target_k = torch.zeros(vocab)
    target_k[best3] = (logits[best3] / temperature).softmax(-1)
    got_k = empirical(top_k=3)
    assert got_k[target_k == 0].sum() == 0 and 0.5 * (got_k - target_k).abs().sum() < 0.02
    # top_p: only the smallest set of best tokens holding p of the mass
    order = target.argsort(descending=True)
    nucleus = order[:int((target[order].cumsum(0) < 0.6).sum()) + 1]
    outside = torch.ones(vocab, dtype=torch.bool)
    outside[nucleus] = False
    assert len(nucleus) < vocab and empirical(top_p=0.6)[outside].sum() == 0


def test_format_prompt_uses_chat_template_when_present(tokenizer, capsys):
    assert format_prompt(tokenizer, "hi", system="be brief") == "be brief\n\nhi"
    assert format_prompt(tokenizer, "hi") == "hi"
    chat = train_tiny_tokenizer(CORPUS, vocab_size=300)
    chat.name_or_path = "with-template"
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|im_end|>{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    text = format_prompt(chat, "hi", system="be brief")
    assert text == "<|system|>be brief<|im_end|><|user|>hi<|im_end|><|assistant|>"
    format_prompt(chat, "again")
    printed = capsys.readouterr().out
    assert printed.count("chat template for tokenizer 'with-template'") == 1  # the choice is shown, once
    assert "plain text" in printed


def test_load_model_from_a_saved_directory(tokenizer, tmp_path):
    model = peaked_model(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model(str(tmp_path))
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu" and not loaded.training
    # AutoTokenizer rebuilds a tokenizer saved next to a qwen2 config as Qwen2Tokenizer (its own whitespace split), so
    # compare through the loaded tokenizer: the vocabulary and the weights must have survived the round trip
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    expected = generate(model, loaded_tokenizer, PROMPTS, max_new_tokens=10, temperature=0)
    got = generate(loaded, loaded_tokenizer, PROMPTS, max_new_tokens=10, temperature=0)
    assert [s.token_ids for s in got] == [s.token_ids for s in expected]
    assert load_model(str(tmp_path), dtype="bf16")[0].dtype == torch.bfloat16


def test_unreachable_hub_model_error_names_model_path():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(ROOT / "synth.py"), "generate", "--model",
                             "no-such-org/no-such-model", "--prompt", "hi"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "--model PATH" in result.stderr and "no-such-org/no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_are_rejected(tokenizer):
    model = tiny_model(tokenizer)
    for bad in (dict(n=0), dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_k=-1)):
        with pytest.raises(ValueError):
            generate(model, tokenizer, PROMPTS, **bad)
    with pytest.raises(ValueError, match="torch.distributed"):
        generate(model, tokenizer, PROMPTS, lockstep=True)
    assert generate(model, tokenizer, []) == []


# ---- lockstep under torch.distributed: 2 gloo processes on CPU

def _lockstep_worker(rank, port, out_dir):
    torch.set_num_threads(1)
    tokenizer = train_tiny_tokenizer(CORPUS, vocab_size=400)
    model = peaked_model(tokenizer)
    # the ranks get different prompts and lengths, so one finishes long before the other
    prompts, max_new = ([PROMPTS[0]], 3) if rank == 0 else (PROMPTS[1:3], 21)
    expected = generate(model, tokenizer, prompts, n=2, max_new_tokens=max_new, temperature=0)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    forwards = []

    def collective(module, args, kwargs):  # what FSDP does in every forward: ranks that stop calling it hang the rest
        dist.all_reduce(torch.zeros(1))
        forwards.append(1)

    model.register_forward_pre_hook(collective, with_kwargs=True)
    got = generate(model, tokenizer, prompts, n=2, max_new_tokens=max_new, temperature=0, lockstep=True, sync_every=4)
    counts = [None, None]
    dist.all_gather_object(counts, len(forwards))
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"same": [s.token_ids for s in got] == [s.token_ids for s in expected],
                   "lengths": [len(s.token_ids) for s in got], "forwards": counts}, f)


def test_lockstep_keeps_ranks_in_step(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(_lockstep_worker, args=(port, str(tmp_path)), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.time() + 120
    while not context.join(timeout=1):
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("lockstep generation did not finish: a rank is stuck in a collective")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for result in results:
        assert result["same"]
        assert result["forwards"][0] == result["forwards"][1]  # both ranks made the same number of forward calls
    assert results[0]["lengths"] == [3, 3] and max(results[1]["lengths"]) > 3


def test_sample_fields(tokenizer):
    sample = generate(tiny_model(tokenizer), tokenizer, ["for"], max_new_tokens=3, temperature=0)[0]
    assert isinstance(sample, Sample)
    assert set(vars(sample)) == {"prompt_index", "text", "token_ids", "logprobs", "finish_reason", "prompt_token_ids"}


# -----------------------------------------------------------------------------
# Problems: training problem files, benchmark loaders (fixtures written for the project in tests/fixtures/evaluate/),
# the ReCode output format and prompts, code extraction, and the math answer checker

BENCHMARK_DATA = ROOT / "tests" / "fixtures" / "evaluate"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECODE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("text, code", [
    ("<think>try ```x = 0```</think>\n<answer>\n```python\ndef f():\n    return 1\n```\n</answer>", "def f():\n    return 1"),
    ("first\n```python\na = 1\n```\nthen\n```\nb = 2\n```\nbye", "b = 2"),                # the last block wins
    ("```python\na = 1\n```\n```python\nb = 2\nc = 3", "b = 2\nc = 3"),                  # cut off by the token limit
    ("    return x + 1\n", "    return x + 1"),                                         # a bare code completion
    ("<think>hmm</think><answer>def g(): pass</answer>", "def g(): pass"),              # answer without a fence
])
def test_extract_code_last_fence(text, code):
    assert synth.extract_code(text) == code

def test_extract_code_livecodebench_rule():
    assert synth.extract_code("intro\n```python\nprint(1)\n```\nmore text", "lcb") == "print(1)"
    assert synth.extract_code("a\n```python\nx=1\n```\n```python\ny=2\n```", "lcb") == "y=2"
    assert synth.extract_code("```python\nprint(1)", "lcb") == ""       # fewer than two fence lines: no code

def test_split_reasoning_and_prompts():
    assert synth.split_reasoning("<think>a</think><answer>b</answer>") == ("a", "b")
    assert synth.split_reasoning("plain") == (None, None)
    problems, _ = synth.load_benchmark("livecodebench", str(BENCHMARK_DATA / "livecodebench.jsonl"))
    system, user = synth.build_prompt(problems[0], "recode")
    assert "<think>" in system and "<answer>" in system and user.startswith("### Question:")
    system, user = synth.build_prompt(problems[0], "instruct")
    assert system == synth.LCB_SYSTEM and "### Format: Read the inputs from stdin" in user
    functional = next(p for p in problems if p["tests"]["base"]["type"] == "call")
    assert "class Solution" in synth.build_prompt(functional, "instruct")[1]
    math_problem = synth.load_benchmark("gsm8k", str(BENCHMARK_DATA / "gsm8k.jsonl"))[0][0]
    assert "\\boxed" in synth.build_prompt(math_problem, "recode", "math")[0]

def test_solution_from_output_adds_prompt_imports():
    p = synth.load_benchmark("humaneval", str(BENCHMARK_DATA / "humaneval.jsonl"))[0][0]
    code = synth.solution_from_output(p, "```python\ndef add(xs: List[int], y: int):\n    return xs\n```", "last_fence")
    assert code.startswith("from typing import List\n")
    assert synth.solution_from_output(p, "", "last_fence") == ""                 # empty stays empty (a failed sample)


@pytest.mark.parametrize("pred, gold", [
    ("1,000", "1000"), ("2.50", "2.5"), ("\\frac{1}{2}", "0.5"), ("\\dfrac12", "1/2"), ("-\\frac{3}{4}", "-0.75"),
    ("18 \\text{ dollars}", "18"), ("1.6 \\mathrm{~cm}", "1.6"), ("4.5 \\times 10^{33}", "4.5e33"),
    ("x = 5", "5"), ("90^\\circ", "90"), ("50\\%", "50"), ("\\$18", "18"), ("3, 2", "2,3"), ("(1,2]", "(1, 2]"),
    ("2\\sqrt{3}", "\\sqrt{12}"), ("033", "33"), ("\\boxed{7}", "7"), ("-3", "-3.0"),
    # fractions and decimals, \\frac / \\dfrac / a/b, signs
    ("\\frac{-3}{4}", "-0.75"), ("-3/4", "-\\frac34"), ("\\tfrac{3}{4}", "0.75"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("\u22127", "-7"), ("\\frac{1}{2}x", "x/2"), ("x^2+1", "1+x^2"),
    # units, degrees, trailing zeros, thousands separators, dollars
    ("10 \\text{cm}^2", "10"), ("10\\,\\text{m}", "10"), ("30^{\\circ}", "30"), ("30\u00b0", "30"), ("5.0", "5"),
    ("2.500", "2.5"), ("1{,}000", "1000"), ("\\$1,000.00", "1000"), ("1,000,000", "10^6"), ("1.5\\times10^{3}", "1500"),
    # \\text / \\mathbf wrappers, a choice or a number in parentheses (AIME solutions write \\textbf{(55) })
    ("\\text{(C)}", "C"), ("\\mathbf{127}", "127"), ("\\textbf{(55) }", "055"), ("\\text{Monday}", "Monday"),
    # tuples, intervals and sets
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"), ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\{1,2\\}", "\\{2,1\\}"),
])
def test_math_answers_match(pred, gold):
    assert synth.math_answers_match(pred, gold)

@pytest.mark.parametrize("pred, gold", [
    ("7", "8"), ("-3", "3"), ("1.6", "1.7"), ("2,3", "2,4"), ("(1,2)", "(1,2]"), (None, "1"), ("", "0"),
    ("\\sqrt{2}", "1.41"), ("__import__('os').system('true')", "0"),
    ("100000", "100001"), ("1,2", "12"), ("1,000", "1"), ("2.5", "25"), ("0.33", "\\frac{1}{3}"), ("(1,2)", "(2,1)"),
    ("\\{1,2\\}", "\\{1,3\\}"), ("x^2+1", "x^2-1"), ("3", "3\\sqrt2"), ("-\\frac{3}{4}", "\\frac{3}{4}"),
])
def test_math_answers_differ(pred, gold):
    assert not synth.math_answers_match(pred, gold)

def test_math_extraction():
    assert synth.all_boxed("\\boxed{\\frac{1}{2}} and \\fbox{3} and \\boxed 5$") == ["\\frac{1}{2}", "3", "5"]
    assert synth.extract_math_answer("so \\boxed{a} then \\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert synth.extract_math_answer("cut off \\boxed{\\frac{1}{") is None
    assert synth.extract_math_answer("work\n#### 1,200") == "1,200"
    assert synth.score_math("<think>2 or 3</think><answer>\\boxed{2} and \\boxed{3}</answer>", "2, 3")
    assert synth.score_math("the answer is \\boxed{1200}", "1200")
    assert not synth.score_math("the answer is 1200", "1200")             # no boxed or #### answer: not credited
    # several boxes: the last one counts (or all of them together, as a list)
    assert synth.score_math("first \\boxed{3}, then fixed: \\boxed{4}", "4")
    assert not synth.score_math("first \\boxed{3}, then fixed: \\boxed{4}", "3")
    assert synth.score_math("<think>maybe \\boxed{1}</think><answer>\\boxed{2}</answer>", "2")  # <answer> wins
    assert synth.score_math("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt2}{2}")                # nested braces
    assert synth.score_math("\\boxed{{5}}", "5") and synth.score_math("\\boxed{ 5 }", "5")


def test_humaneval_and_mbpp_loaders():
    he, info = synth.load_benchmark("humaneval", str(BENCHMARK_DATA / "humaneval.jsonl"))
    assert [p["task_id"] for p in he] == ["HumanEval/0", "HumanEval/1"] and len(info[0]["sha256"]) == 64
    assert he[0]["tests"]["base"]["program"].rstrip().endswith("check(add)")
    mbpp, _ = synth.load_benchmark("mbpp", str(BENCHMARK_DATA / "mbpp.jsonl"))
    assert [p["task_id"] for p in mbpp] == ["Mbpp/11", "Mbpp/12"]       # task 600 is outside the test split
    program = mbpp[1]["tests"]["base"]["program"]
    assert program.index("root = Node(1)") < program.index("assert count_nodes(root)")

def test_evalplus_loaders_restore_types_and_pick_oracles():
    hep = {p["task_id"]: p for p in synth.load_benchmark("humaneval+", str(BENCHMARK_DATA / "humanevalplus.jsonl"))[0]}
    plus = hep["HumanEval/0"]["tests"]["plus"]        # expected outputs keep their types: a list, not a tuple
    assert plus["cases"][1] == {"args": [[10 ** 20], 1], "expected": ["L", 10 ** 20 + 1]}
    n = len(plus["cases"])
    assert plus["compare"] == "evalplus" and plus["sample_timeout"] == min(60, 4 * n) + 1   # 4 s floor per input
    assert hep["HumanEval/0"]["tests"]["base"]["atol"] == 0
    assert hep["HumanEval/2"]["tests"]["base"]["atol"] == 0   # execute.py raises it per input, as EvalPlus does
    lenient = {p["task_id"]: p for p in synth.load_benchmark(
        "humaneval+", str(BENCHMARK_DATA / "humanevalplus.jsonl"), lenient=True)[0]}
    assert lenient["HumanEval/0"]["tests"]["plus"]["cases"][1]["expected"] == [10 ** 20 + 1]
    assert lenient["HumanEval/2"]["tests"]["base"]["atol"] == 1e-6      # plain data: one tolerance per group
    assert hep["HumanEval/32"]["tests"]["plus"]["type"] == "assert"     # find_zero: |poly(x)| <= atol
    mbpp = {p["task_id"]: p for p in synth.load_benchmark("mbpp+", str(BENCHMARK_DATA / "mbppplus.jsonl"))[0]}
    case = mbpp["Mbpp/106"]["tests"]["base"]["cases"][0]
    assert case == {"args_py": "[[5, 6, 7], (9, 10)]", "expected": ["T", 9, 10, 5, 6, 7]}
    assert "(3, 4, 5, 6)" in mbpp["Mbpp/2"]["tests"]["base"]["program"]   # tuples restored, set-equality oracle
    assert "_o is not None" in mbpp["Mbpp/737"]["tests"]["base"]["program"]
    assert mbpp["Mbpp/404"]["tests"]["plus"]["cases"][0]["args"][0] == math.inf

def test_expected_outputs_are_cached_by_dataset_hash(monkeypatch):
    synth.load_benchmark("mbpp+", str(BENCHMARK_DATA / "mbppplus.jsonl"))
    monkeypatch.setattr(synth, "run_jobs", lambda *a, **k: pytest.fail("expected outputs were recorded twice"))
    problems, _ = synth.load_benchmark("mbpp+", str(BENCHMARK_DATA / "mbppplus.jsonl"))
    assert len(problems) == 4 and all(p["tests"] and not p["reference_check"] for p in problems)

def test_livecodebench_loader_decodes_and_selects():
    problems, _ = synth.load_benchmark("livecodebench", str(BENCHMARK_DATA / "livecodebench.jsonl"))
    by_id = {p["task_id"]: p for p in problems}
    stdio = by_id["abc001_a"]["tests"]["base"]
    assert stdio["type"] == "stdio" and len(stdio["cases"]) == 3       # 1 public + 2 compressed private
    call = by_id["3000"]["tests"]["base"]
    assert call["fn_name"] == "maxPairSum" and call["cases"][0] == {"args": [[1, 5, 3], 0], "expected": 8}
    assert {p["difficulty"] for p in problems} == {"easy", "medium", "hard"}
    window, _ = synth.load_benchmark("livecodebench", str(BENCHMARK_DATA / "livecodebench.jsonl"), start_date="2024-01-01",
                                 end_date="2024-08-31")
    assert [p["task_id"] for p in window] == ["abc001_a"]
    assert synth.lcb_shards("release_v3") == ["test.jsonl", "test2.jsonl", "test3.jsonl"]
    assert synth.lcb_shards("v2_v3") == ["test2.jsonl", "test3.jsonl"] and synth.lcb_shards("v6") == ["test6.jsonl"]
    with pytest.raises(SystemExit, match="lcb-version"):
        synth.lcb_shards("release_v9")

def test_lcb_private_tests_refuse_anything_but_a_string(tmp_path):
    cases = [{"input": "1\n", "output": "1\n", "testtype": "stdin"}]
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()
    assert synth.decode_lcb_tests(packed) == cases
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="only plain str"):
        synth.decode_lcb_tests(evil)
    assert not marker.exists()
    not_str = base64.b64encode(zlib.compress(pickle.dumps([1, 2]))).decode()
    with pytest.raises(pickle.UnpicklingError, match="expected a str"):
        synth.decode_lcb_tests(not_str)

def test_bigcodebench_loader_skips_missing_libraries():
    problems, _ = synth.load_benchmark("bigcodebench", str(BENCHMARK_DATA / "bigcodebench.jsonl"))
    ok, missing = problems
    assert ok["skip"] is None and ok["code_prefix"] == "import math\ndef task_func(r):\n\n    pass\n"
    assert "surely_not_an_installed_library" in missing["skip"]
    assert ok["prompt"].startswith(synth.CODE_INSTRUCTION) and "Return the area" in ok["prompt"]
    complete = synth.load_benchmark("bigcodebench", str(BENCHMARK_DATA / "bigcodebench.jsonl"), split="complete")[0][0]
    assert '"""' in complete["prompt"]

def test_mbpp_train_and_validation_splits(tmp_path):
    rows = [{"task_id": t, "text": f"task {t}", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"],
             "test_setup_code": "", "challenge_test_list": []} for t in (3, 11, 510, 511, 600, 601, 974)]
    data = tmp_path / "mbpp.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = {name: [p["task_id"] for p in synth.load_benchmark(name, str(data))[0]]
           for name in ("mbpp", "mbpp-train", "mbpp-validation")}
    assert ids == {"mbpp": ["Mbpp/11", "Mbpp/510"], "mbpp-train": ["Mbpp/601", "Mbpp/974"],
                   "mbpp-validation": ["Mbpp/511", "Mbpp/600"]}
    # grpo.py --data mbpp.jsonl --data-benchmark mbpp-train trains on the train split
    problems = synth.load_problems([str(data)], "mbpp-train")
    assert [p["task_id"] for p in problems] == ["Mbpp/601", "Mbpp/974"] and {p["task"] for p in problems} == {"code"}

def test_math_loaders_read_gold_answers():
    gold = {name: [p["answer"] for p in synth.load_benchmark(name, str(BENCHMARK_DATA / f"{name}.jsonl"))[0]]
            for name in ("gsm8k", "math500", "aime", "minerva")}
    assert gold == {"gsm8k": ["1200", "5"], "math500": ["\\frac{3}{4}", "2\\sqrt{3}"], "aime": ["24"],
                    "minerva": ["1.6"]}

def test_download_checks_pinned_sha256(tmp_path):
    source = synth.SOURCES["humaneval"][0]
    cached = Path(os.environ["RECODE_CACHE"]) / "data" / "humaneval" / source["url"].rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the real file")
    with pytest.raises(SystemExit, match="differs from the pinned"):
        synth.load_benchmark("humaneval")


def test_math_problems_in_the_training_format(tmp_path):
    rows = [{"prompt": "1+1?", "answer": 2, "reference": {"reasoning": "one and one", "answer": "2"}},
            {"prompt": "2+2?", "answer": "4", "completion": "<think>x</think><answer>\\boxed{4}</answer>"},
            {"prompt": "add", "tests": {"type": "call", "fn_name": "f", "cases": [{"args": [], "expected": 1}]}}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = synth.load_problems([str(path)])
    assert [p["task"] for p in problems] == ["math", "math", "code"] and problems[0]["answer"] == "2"
    assert synth.completion_target(problems[0]) == synth.format_math_completion("one and one", "2")
    assert synth.completion_target(problems[1]) == rows[1]["completion"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x", "task": "math"}) + "\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl:1: a math problem needs an 'answer'"):
        synth.load_problems([str(tmp_path / "bad.jsonl")])
    (tmp_path / "noref.jsonl").write_text(json.dumps({"prompt": "x", "answer": "1"}) + "\n")
    with pytest.raises(SystemExit, match=r"noref.jsonl:1: --algo sft needs 'reference' \{reasoning, answer\}"):
        synth.load_problems([str(tmp_path / "noref.jsonl")], need_reference=True)


# -----------------------------------------------------------------------------
# CRPL synthesis and LCB-RB pairs

FIXTURES = ROOT / "tests" / "fixtures" / "synth"


def fixture_problems():
    return [json.loads(line) for line in (FIXTURES / "problems.jsonl").read_text().splitlines()]


def read_rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


def good_reply(reasoning, code):
    return f"<think>\n{reasoning}\n</think>\n<answer>\n```python\n{code}\n```\n</answer>"


def original_code(request_text):
    return re.search(r"```python\n(.*?)\n```", request_text, re.S)[1]  # the first block: the solution's code


class ScriptedTeacher:
    """A teacher whose replies a function of the request decides; it remembers what it was asked."""
    name = "scripted"

    def __init__(self, reply):
        self.reply, self.requests = reply, []

    def __call__(self, requests, attempt=0):
        self.requests += requests
        return [self.reply(r) for r in requests]


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1 whose answers `reply(body) -> (status, headers, content)` decides."""

    def __init__(self, reply):
        self.reply, self.requests, self.lock = reply, [], threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, dict(self.headers), body))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, headers, content = server.reply(body)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    servers = []
    yield lambda reply: servers.append(ChatServer(reply)) or servers[-1]
    for server in servers:
        server.close()


def test_http_teacher_writes_good_replies_and_records_malformed_ones_as_failures(chat_server, tmp_path, monkeypatch,
                                                                                 capsys):
    def reply(body):
        user = body["messages"][-1]["content"]
        if "clearly worse" in user and "sum of the even numbers" in user:
            return 200, {}, "Sure! Here is a worse version of the reasoning."  # never in ReCode's format
        kind = "worse" if "clearly worse" in user else "better"
        return 200, {}, good_reply(f"A {kind} reasoning, written by the server.", original_code(user))

    server = chat_server(reply)
    monkeypatch.setenv("TEACHER_KEY", "sekrit")
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join((FIXTURES / "problems.jsonl").read_text().splitlines(keepends=True)[:2]))
    out, failures = tmp_path / "crpl.jsonl", tmp_path / "crpl.failures.jsonl"
    command = ["crpl", "--problems", str(problems), "--teacher", server.url, "--out", str(out)]
    with pytest.raises(SystemExit, match="--teacher-model"):
        main(command)
    main(command + ["--teacher-model", "teacher-x", "--api-key-env", "TEACHER_KEY", "--max-attempts", "3"])

    records = {r["id"]: r for r in read_rows(out)}
    assert records["largest"]["optimized"]["reasoning"] == "A better reasoning, written by the server."
    assert records["largest"]["degraded"]["reasoning"] == "A worse reasoning, written by the server."
    assert records["largest"]["teacher"] == f"teacher-x@{server.url}"
    assert records["sum_even"]["degraded"] is None and records["sum_even"]["pairs"] == ["optimized>original"]
    assert "Sure!" not in out.read_text()
    degrade_asks = [b for _, _, b in server.requests if "clearly worse" in b["messages"][-1]["content"]
                    and "sum of the even numbers" in b["messages"][-1]["content"]]
    assert len(degrade_asks) == 3 and "malformed teacher replies: 3" in capsys.readouterr().out
    assert read_rows(failures) == [{"id": "sum_even", "stage": "degrade: malformed reply",
                                    "reason": "no <think>...</think> reasoning",
                                    "reply": "Sure! Here is a worse version of the reasoning."}]
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekrit"
    assert body["model"] == "teacher-x" and body["messages"][-1]["role"] == "user"


def test_http_teacher_retries_429_and_5xx_honoring_retry_after(chat_server):
    script = iter([(429, {"Retry-After": "7"}, None), (503, {}, None), (200, {}, "fine")])
    server = chat_server(lambda body: next(script))
    teacher = HTTPTeacher(server.url, "m", backoff=0.5)
    sleeps = []
    teacher.sleep = sleeps.append  # record the waits instead of waiting
    assert teacher([{"system": None, "user": "hi"}]) == ["fine"]
    assert len(server.requests) == 3
    assert sleeps[0] == 7.0                 # Retry-After beats the 0.5-1 s backoff of the first retry
    assert 1.0 <= sleeps[1] <= 1.5          # exponential backoff: 0.5 * 2 ** 1, times a jitter in [1, 1.5]

    server = chat_server(lambda body: (500, {}, None))
    teacher = HTTPTeacher(server.url, "m", retries=2)
    teacher.sleep = lambda seconds: None
    with pytest.raises(TeacherError, match="no answer after 3 tries"):
        teacher([{"system": None, "user": "hi"}])
    assert len(server.requests) == 3

    server = chat_server(lambda body: (401, {}, None))  # a bad key: retrying cannot help
    with pytest.raises(TeacherError, match="HTTP 401"):
        HTTPTeacher(server.url, "m")([{"system": None, "user": "hi"}])
    assert len(server.requests) == 1


def test_http_teacher_concurrency_and_rate_limit(chat_server):
    everyone_in = threading.Barrier(3, timeout=20)

    def reply(body):
        n = int(body["messages"][-1]["content"])
        if n < 3:
            everyone_in.wait()  # answered only once three requests are in flight together
        return 200, {}, f"echo {n}"

    server = chat_server(reply)
    teacher = HTTPTeacher(server.url, "m", concurrency=3, retries=0)
    assert teacher([{"system": None, "user": str(n)} for n in range(9)]) == [f"echo {n}" for n in range(9)]
    assert server.max_in_flight == 3

    teacher = HTTPTeacher(server.url, "m", concurrency=1, rate=4.0)
    clock = [0.0]
    teacher.clock = lambda: clock[0]
    teacher.sleep = lambda seconds: clock.__setitem__(0, clock[0] + seconds)
    teacher([{"system": None, "user": str(n)} for n in range(3, 8)])
    assert clock[0] == pytest.approx(1.0)  # 5 requests at 4 per second: the last one starts at t = 1 s


def token_swaps(old, new):
    a, b = re.split(r"(\W+)", old), re.split(r"(\W+)", new)
    assert len(a) == len(b), (old, new)
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_toy_teacher_is_deterministic_and_changes_the_intended_dimension():
    differs_with_seed = False
    for p in fixture_problems():
        reference = p["reference"]
        steps, _ = split_steps(reference["reasoning"])
        optimized = parse_solution(ToyTeacher(seed=1)([make_request("optimize", p, reference)])[0])
        new_steps, _ = split_steps(optimized["reasoning"])
        assert optimized["code"].strip() == reference["code"].strip()
        assert [s.split(": ", 1)[1] for s in new_steps if s.startswith("Step ")] == steps
        assert any(s.startswith("Edge cases:") for s in new_steps) and any("Complexity:" in s for s in new_steps)
        for dimension in DEGRADATIONS:
            request = make_request("degrade", p, reference, dimension)
            reply = ToyTeacher(seed=1)([request])[0]
            assert ToyTeacher(seed=1)([request])[0] == reply
            differs_with_seed |= ToyTeacher(seed=2)([request])[0] != reply
            degraded = parse_solution(reply)
            assert degraded["code"].strip() == reference["code"].strip()
            new, _ = split_steps(degraded["reasoning"])
            added = [s for s in new if s not in steps]
            if dimension == "coherence":  # same steps, another order, plus a digression
                assert sorted(s for s in new if s in steps) == sorted(steps)
                assert [s for s in new if s in steps] != steps
                assert len(added) == 1 and added[0] in TOY_DIGRESSIONS
            elif dimension == "logical rigor":  # steps dropped, the rest in order, plus an unjustified leap
                kept = [s for s in new if s in steps]
                assert len(kept) < len(steps) and kept == [s for s in steps if s in kept]
                assert len(added) == 1 and added[0] in TOY_LEAPS
            elif len(new) == len(steps):  # factual accuracy: words turned into their opposites or numbers changed
                swaps = [swap for old, changed in zip(steps, new) for swap in token_swaps(old, changed)]
                assert 1 <= len(swaps) <= max(2, len(steps) // 2)
                assert all(TOY_SWAPS.get(x.lower()) == y.lower() or (x.isdigit() and y.isdigit()) for x, y in swaps)
            else:  # factual accuracy without a word to swap: a false statement added
                assert [s for s in new if s in steps] == steps and len(added) == 1 and added[0] in TOY_FALSE_FACTS
    assert differs_with_seed


def test_filters_drop_failing_code_and_copies_and_count_every_drop(tmp_path, capsys):
    problems = fixture_problems()[:5]
    problems[0]["reference"]["code"] = "def largest(xs):\n    return xs[0]\n"  # the original fails its tests

    def reply(request):
        reasoning, code = request["reasoning"], request["code"]
        if request["kind"] == "optimize" and request["id"] == "sum_even":
            return good_reply("A tidier reasoning.", "def sum_even(xs):\n    return 0\n")  # fails the tests
        if request["id"] == "reverse_words" and request["kind"] == "degrade":
            return good_reply(reasoning.replace("words.", "words!", 1), code)  # one character changed
        if request["id"] == "is_palindrome":
            return good_reply(reasoning, code)  # both variants copy the original
        return good_reply(f"A {request['kind']}d version of the reasoning.", code)

    teacher = ScriptedTeacher(reply)
    out = tmp_path / "crpl.jsonl"
    counts = synthesize(problems, teacher, str(out))
    assert "largest" not in {r["id"] for r in teacher.requests}  # a failing original is never sent to the teacher
    assert counts["original fails tests"] == 1 and counts["optimized fails tests"] == 1
    assert counts["degraded (near-)identical to the original"] == 2
    assert counts["optimized (near-)identical to the original"] == 1
    assert counts["fewer than two variants left"] == 1 and counts["records written"] == 3
    records = {r["id"]: r for r in read_rows(out)}
    assert records["sum_even"]["optimized"] is None and records["sum_even"]["pairs"] == ["original>degraded"]
    assert records["reverse_words"]["degraded"] is None and records["reverse_words"]["pairs"] == ["optimized>original"]
    assert len(records["count_vowels"]["pairs"]) == 3
    failures = {(f["id"], f["stage"]) for f in read_rows(tmp_path / "crpl.failures.jsonl")}
    assert failures == {("largest", "original fails tests"), ("sum_even", "optimized fails tests"),
                        ("reverse_words", "degraded (near-)identical to the original"),
                        ("is_palindrome", "optimized (near-)identical to the original"),
                        ("is_palindrome", "degraded (near-)identical to the original"),
                        ("is_palindrome", "fewer than two variants left")}
    assert "original fails tests: 1" in capsys.readouterr().out


def test_an_interrupted_run_resumes_without_redoing_a_problem(tmp_path):
    problems = fixture_problems()
    synthesize(problems, ToyTeacher(seed=3), str(tmp_path / "whole.jsonl"), chunk=2)

    class DiesOnThirdCall(ToyTeacher):
        calls = 0

        def __call__(self, requests, attempt=0):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("teacher went away")
            return super().__call__(requests, attempt)

    out = tmp_path / "crpl.jsonl"
    with pytest.raises(RuntimeError, match="went away"):
        synthesize(problems, DiesOnThirdCall(seed=3), str(out), chunk=2)
    assert [r["id"] for r in read_rows(out)] == [p["task_id"] for p in problems[:4]]
    with open(out, "a") as f:
        f.write('{"id": "is_palindrome", "problem": "Return Tr')  # a line cut short by a killed process

    class Counting(ToyTeacher):
        asked = []

        def __call__(self, requests, attempt=0):
            self.asked += [r["id"] for r in requests]
            return super().__call__(requests, attempt)

    teacher = Counting(seed=3)
    counts = synthesize(problems, teacher, str(out), chunk=2)
    assert sorted(teacher.asked) == ["factorial", "factorial", "is_palindrome", "is_palindrome"]
    assert counts["already done"] == 4 and counts["records written"] == 2
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text()


def test_crpl_command_line_writes_what_reward_py_reads(tmp_path, capsys):
    from reward import read_groups
    problems = tmp_path / "problems.jsonl"
    lines = (FIXTURES / "problems.jsonl").read_text().splitlines()
    problems.write_text("\n".join(lines + lines[:1]) + "\n")  # one problem twice
    out = tmp_path / "crpl.jsonl"
    main(["crpl", "--problems", str(problems), "--teacher", "toy", "--out", str(out)])
    assert "duplicate problems skipped: 1" in capsys.readouterr().out
    rows = read_rows(out)
    assert len(rows) == 6 and {r["dimension"] for r in rows} <= set(DEGRADATIONS)
    groups = read_groups([str(out)])
    assert len(groups) == 6 and all(len(g.pairs) == 3 and len(g.texts) == 3 for g in groups)
    main(["crpl", "--problems", str(problems), "--teacher", "toy", "--out", str(out)])
    assert "already done: 6" in capsys.readouterr().out and read_rows(out) == rows


MATH_PROBLEMS = [dict(task_id=f"m{i}", task="math", prompt=f"Ann has {a} apples and finds {b} more. How many now?",
                      answer=str(a + b), tests={},
                      reference={"reasoning": f"Ann starts with {a} apples.\nFinds {b} more: {a} + {b} = {a + b}.\n"
                                              f"So Ann has {a + b} apples.", "answer": str(a + b)})
                 for i, (a, b) in enumerate([(2, 3), (4, 5), (6, 1), (7, 2), (3, 3), (5, 8)])]


def math_reply(reasoning, answer):
    return f"<think>\n{reasoning}\n</think>\n<answer>\n\\boxed{{{answer}}}\n</answer>"


def test_math_teacher_prompts_say_math_and_parse_boxed_answers():
    p = MATH_PROBLEMS[0]
    solve = make_request("solve", p)
    assert "\\boxed" in solve["system"] and "```python" not in solve["system"]
    for kind, dimension in (("optimize", None), ("degrade", "factual accuracy")):
        request = make_request(kind, p, p["reference"], dimension)
        text = request["user"]
        assert "math problem" in text and "Final answer: \\boxed{5}" in text and p["reference"]["reasoning"] in text
        assert not re.search(r"\b(code|python|programming)\b", text, re.I)
    assert "calculation" in make_request("degrade", p, p["reference"], "factual accuracy")["user"]
    request = make_request("optimize", p, p["reference"])
    parsed = parse_solution(math_reply("steps", "\\frac{1}{2}"), request)
    assert parsed == {"reasoning": "steps", "answer": "\\frac{1}{2}"}
    for bad in ("<think>steps</think><answer>5</answer>", "<think>steps</think><answer>\\boxed{}</answer>",
                "<answer>\\boxed{5}</answer>"):
        with pytest.raises(MalformedReply):
            parse_solution(bad, request)


def test_toy_teacher_math_variants_keep_the_answer_and_use_math_phrases():
    from synth import TOY_MATH_DIGRESSIONS, TOY_MATH_FALSE_FACTS, TOY_MATH_LEAPS, toy_math_tasks
    train, _ = toy_math_tasks(seed=0, per_template=1)
    for p in train[:12]:
        reference = p["reference"]
        steps, _ = split_steps(reference["reasoning"])
        optimized = parse_solution(ToyTeacher(seed=1)([make_request("optimize", p, reference)])[0],
                                   {"task": "math"})
        new_steps, _ = split_steps(optimized["reasoning"])
        assert optimized["answer"] == p["answer"]
        assert [s.split(": ", 1)[1] for s in new_steps if s.startswith("Step ")] == steps
        assert new_steps[0].startswith("Goal: How many") and any(s.startswith("Check:") for s in new_steps)
        for dimension in DEGRADATIONS:
            request = make_request("degrade", p, reference, dimension)
            reply = ToyTeacher(seed=1)([request])[0]
            assert ToyTeacher(seed=1)([request])[0] == reply
            degraded = parse_solution(reply, request)
            assert degraded["answer"] == p["answer"] and degraded["reasoning"] != reference["reasoning"]
            added = [s for s in split_steps(degraded["reasoning"])[0] if s not in steps]
            code_phrases = set(TOY_FALSE_FACTS + TOY_LEAPS + TOY_DIGRESSIONS)
            assert not code_phrases & set(added)  # no Python facts in a math reasoning
            if dimension == "coherence":
                assert len(added) == 1 and added[0] in TOY_MATH_DIGRESSIONS
            elif dimension == "logical rigor":
                assert len(added) == 1 and added[0] in TOY_MATH_LEAPS
            else:  # numbers changed (an arithmetic error), or a false fact where there is no number
                assert any(re.search(r"\d", s) for s in added) or added[0] in TOY_MATH_FALSE_FACTS


def test_math_filter_checks_final_answers_not_code(tmp_path):
    from reward import read_groups
    problems = [dict(p) for p in MATH_PROBLEMS]
    problems[0]["reference"] = dict(problems[0]["reference"], answer="6")  # the original reaches a wrong answer

    def reply(request):
        if request["id"] == "m1" and request["kind"] == "optimize":
            return math_reply("A cleaner reasoning.", "10")                   # changes the answer: dropped
        if request["id"] == "m2" and request["kind"] == "optimize":
            return math_reply("A cleaner reasoning.", "\\frac{14}{2}")       # the same answer, written otherwise
        if request["kind"] == "degrade":
            return math_reply(f"A worse reasoning of {request['id']}.", "99")  # degraded answers are not checked
        return math_reply(f"A better reasoning of {request['id']}.", request["answer"])

    teacher = ScriptedTeacher(reply)
    out = tmp_path / "crpl.jsonl"
    counts = synthesize(problems, teacher, str(out))
    assert "m0" not in {r["id"] for r in teacher.requests}
    assert counts["original gets a wrong answer"] == 1 and counts["optimized gets a wrong answer"] == 1
    assert counts["records written"] == 5
    records = {r["id"]: r for r in read_rows(out)}
    assert records["m1"]["optimized"] is None and records["m1"]["pairs"] == ["original>degraded"]
    assert records["m2"]["optimized"] == {"reasoning": "A cleaner reasoning.", "answer": "\\frac{14}{2}"}
    assert records["m3"]["original"] == {"reasoning": MATH_PROBLEMS[3]["reference"]["reasoning"], "answer": "9"}
    assert all(set(v) == {"reasoning", "answer"} for r in records.values() for v in
               (r["original"], r["optimized"], r["degraded"]) if v)
    groups = read_groups([str(out)])  # reward.py trains on these records unchanged
    assert len(groups) == 5 and all(code is None for g in groups for _, code in g.texts)
    assert sum(len(g.pairs) for g in groups) == 3 * 4 + 1


def test_local_teacher_replies_that_are_not_recode_format_become_failures(tokenizer, tmp_path):
    tiny_model(tokenizer).save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    teacher = LocalTeacher(str(tmp_path / "teacher"), max_new_tokens=8)
    out = tmp_path / "crpl.jsonl"
    counts = synthesize(fixture_problems()[:1], teacher, str(out), max_attempts=2)
    assert out.read_text() == "" and counts["malformed teacher replies"] == 4  # optimize and degrade, twice each
    assert [f["stage"] for f in read_rows(tmp_path / "crpl.failures.jsonl")] == [
        "optimize: malformed reply", "degrade: malformed reply", "fewer than two variants left"]


def lcb_fixture():
    from synth import load_benchmark, load_samples
    problems = {p["task_id"]: p for p in load_benchmark("livecodebench", str(FIXTURES / "lcb.jsonl"))[0]}
    return problems, load_samples(FIXTURES / "lcb_samples.jsonl", set(problems))


def reasoning_of(text):
    return re.search(r"<think>\n(.*?)\n</think>", text, re.S)[1]


def test_lcb_rb_pairs_chosen_from_passing_rejected_from_failing():
    problems, samples = lcb_fixture()
    rows, counts = lcb_rb_pairs(problems, samples, pairs_per_problem=2)
    passing = {"Read both numbers from the line and print their sum.",
               "Split the line into two integers; the answer is a plus b, printed on its own line.",
               "Scan the array and keep the largest value."}
    failing = {"Read both numbers and print their difference.", "Print the sum of the two numbers.",
               "The answer is the smallest value."}
    assert sorted(r["task_id"] for r in rows) == ["add", "add", "maxof"]  # "double" has no failing sample
    for row in rows:
        assert row["chosen"]["reasoning"] in passing and row["rejected"]["reasoning"] in failing
        assert row["problem"] == problems[row["task_id"]]["prompt"]
    add = [r for r in rows if r["task_id"] == "add"]
    assert len({r["chosen"]["reasoning"] for r in add}) == 2 and len({r["rejected"]["reasoning"] for r in add}) == 2
    assert counts["samples without <think> reasoning or code"] == 1 and counts["duplicate samples"] == 1
    assert counts["problems with no failing sample"] == 1 and counts["pairs"] == 3


def test_lcb_rb_judge_must_accept_the_chosen_reasoning():
    problems, samples = lcb_fixture()

    def verdict(request):
        if "largest value" in request["reasoning"]:
            return "Hmm, hard to say."  # no verdict: asked again, then given up
        return "VERDICT: NO" if request["reasoning"].startswith("Read both") else "Looks right.\nVERDICT: YES"

    judge = ScriptedTeacher(verdict)
    rows, counts = lcb_rb_pairs(problems, samples, judge=judge, pairs_per_problem=2, max_attempts=2)
    assert [(r["task_id"], r["chosen"]["reasoning"]) for r in rows] == [
        ("add", "Split the line into two integers; the answer is a plus b, printed on its own line.")]
    assert counts["judge: not consistent"] == 1 and counts["judge: consistent"] == 1
    assert counts["judge: no verdict"] == 1 and counts["malformed teacher replies"] == 2
    assert all(r["kind"] == "judge" and "VERDICT" in r["user"] for r in judge.requests)


def test_lcb_rb_command_line(tmp_path):
    from reward import read_groups
    out = tmp_path / "lcb_rb.jsonl"
    main(["lcb-rb", "--data", str(FIXTURES / "lcb.jsonl"), "--samples", str(FIXTURES / "lcb_samples.jsonl"),
          "--out", str(out)])
    rows = read_rows(out)
    assert sorted(r["task_id"] for r in rows) == ["add", "maxof"]
    assert all(set(r) >= {"problem", "chosen", "rejected"} for r in rows)
    assert {r["subset"] for r in rows} == {"easy", "medium"}
    assert sum(len(g.pairs) for g in read_groups([str(out)])) == 2


def test_lcb_rb_samples_with_the_engine_and_resumes_sampling(tokenizer, tmp_path, capsys):
    tiny_model(tokenizer).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    args = ["lcb-rb", "--data", str(FIXTURES / "lcb.jsonl"), "--model", str(tmp_path / "policy"), "-n", "2",
            "--max-new-tokens", "6", "--out", str(tmp_path / "lcb_rb.jsonl")]
    main(args)
    samples = read_rows(tmp_path / "lcb_rb.samples.jsonl")
    assert sorted(s["task_id"] for s in samples) == ["add", "add", "double", "double", "maxof", "maxof"]
    # a random model writes no <think> block: every sample is counted and left out, and no pair is made
    assert "samples without <think> reasoning or code: 6" in capsys.readouterr().out
    assert read_rows(tmp_path / "lcb_rb.jsonl") == []
    main(args)  # every problem has its samples already: none are drawn again
    assert read_rows(tmp_path / "lcb_rb.samples.jsonl") == samples
