"""
Tests for synth.py: model loading, prompt formatting and the generation engine, on tiny random models built from a
config (Qwen2 and Llama) with a tokenizer trained here. No downloads.

    python -m pytest -q tests/test_synth.py
"""

import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from synth import (Sample, eos_token_ids, format_prompt, generate, load_model, tiny_model,  # noqa: E402
                   train_tiny_tokenizer)

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
        ids = sample.prompt_token_ids + sample.token_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        start = len(sample.prompt_token_ids) - 1
        logits = logits[start:start + len(sample.token_ids)]
        # log_softmax(logits / T) before top-k/top-p: the numbers GRPO trains on (raw logits when greedy)
        logprobs = (logits / temperature if temperature > 0 else logits).log_softmax(-1)
        expected = logprobs.gather(-1, torch.tensor(sample.token_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(sample.logprobs), expected, atol=1e-4, rtol=0)


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
