"""
Tests for synth.py's static decode path (StaticDecoder): fixed batch buckets, fixed attention windows, one prompt
cache per group of samples, and its CUDA graphs. The windows and buckets are made small here, so that a 24-token
completion crosses several windows and the batch shrinks several times; greedy tokens are checked against
model.generate and log-probs against a fresh forward, on the four plain decoder families.

    python -m pytest -q tests/test_engine.py
"""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import synth  # noqa: E402
from synth import StaticDecoder, generate, tiny_model, train_tiny_tokenizer  # noqa: E402
from test_synth import CORPUS, FAST_ARCHS, PROMPTS, forward_logprobs, reference_generate  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 4, 8, 16, then 24 columns, and a record of every batch shrink (groups kept)."""
    monkeypatch.setattr(synth, "LENGTH_BUCKET_MIN", 4)
    monkeypatch.setattr(synth, "LENGTH_BUCKET_STRIDE", 8)
    shrinks, windows = [], set()
    select, forward = StaticDecoder.select_groups, StaticDecoder.forward

    def recording_select(self, index):
        shrinks.append(len(index))
        return select(self, index)

    def recording_forward(self, window):
        windows.add(window)
        return forward(self, window)

    monkeypatch.setattr(StaticDecoder, "select_groups", recording_select)
    monkeypatch.setattr(StaticDecoder, "forward", recording_forward)
    return shrinks, windows


def test_decode_windows_double_then_grow_by_the_stride():
    assert [synth.decode_window(c, 4095) for c in (0, 63, 64, 255, 256, 511, 512, 1023, 1024, 4000)] == \
        [64, 64, 128, 256, 512, 512, 1024, 1024, 1536, 4095]
    assert synth.decode_window(5, 10) == 10  # never past the buffer


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_static_path_matches_model_generate_and_a_fresh_forward(tokenizer, arch, small_windows):
    """Left padding, several EOS ids, rows ending at different steps: the batch shrinks 5 -> 4 -> 2 -> 1 groups
    while rows that finished stay in it, and the step crosses every window size."""
    shrinks, windows = small_windows
    model = tiny_model(tokenizer, arch, initializer_range=0.3, **FAST_ARCHS[arch])
    max_new, n = 24, 2
    plain = reference_generate(model, tokenizer, PROMPTS, max_new)
    # more EOS ids, taken from inside completions: rows end at different steps
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + [plain[row][k] for row, k in ((1, 4), (2, 9),
                                                                                                 (4, 16))]
    expected = reference_generate(model, tokenizer, PROMPTS, max_new)
    samples = generate(model, tokenizer, PROMPTS, n=n, max_new_tokens=max_new, temperature=0, sync_every=2,
                       static=True)
    assert [s.token_ids for s in samples] == [expected[i // n] for i in range(len(samples))]
    assert len({len(ids) for ids in expected}) > 2, "rows should end at different steps"
    assert shrinks and shrinks == sorted(shrinks, reverse=True) and all(s & (s - 1) == 0 for s in shrinks), shrinks
    assert windows == {4, 8, 16, 23}
    for sample in samples:  # log-probs of this peaked model reach -10, where fp32 rounds at ~1e-6
        torch.testing.assert_close(torch.tensor(sample.logprobs), forward_logprobs(model, sample, 0.0), atol=1e-5,
                                   rtol=2e-6)


def test_static_samples_do_not_depend_on_when_the_batch_shrinks(tokenizer, small_windows):
    """Seeded sampling at T = 1 with top-p on the static path: each row's random draw is picked by the row's origin,
    so its tokens do not depend on which finished rows still fill the bucket. Looking at the host every 2 or every
    5 steps shrinks the batch at different steps, and must give the same samples."""
    model = tiny_model(tokenizer, "qwen2", initializer_range=0.3)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + list(range(40, 60))  # rows end early
    settings = dict(n=3, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3, static=True)
    shrinks = small_windows[0]
    often = generate(model, tokenizer, PROMPTS, sync_every=2, **settings)
    shrinks_often = list(shrinks)
    shrinks.clear()
    rarely = generate(model, tokenizer, PROMPTS, sync_every=5, **settings)
    assert [s.token_ids for s in often] == [s.token_ids for s in rarely]
    assert {s.finish_reason for s in often} == {"eos", "length"}
    assert shrinks_often and shrinks     # the batch shrank in both, at sync points 2 and 5 steps apart
    for a, b in zip(often, rarely):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=2e-6)


def test_the_prompt_cache_is_one_copy_per_prompt(tokenizer, monkeypatch):
    """G samples of a prompt read one copy of its keys and values; the per-row buffers hold the completion only."""
    made = []
    init = StaticDecoder.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(StaticDecoder, "__init__", recording_init)
    model = tiny_model(tokenizer, "qwen2")
    prompts = PROMPTS[:3]
    generate(model, tokenizer, prompts, n=4, max_new_tokens=6, temperature=1.0, static=True)
    decoder, = made
    prompt_len = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    kv_heads, head_dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
    assert len(decoder.prompt_keys) == model.config.num_hidden_layers
    assert decoder.prompt_keys[0].shape == (3, kv_heads, prompt_len, head_dim)
    assert decoder.decode_keys[0].shape == (3 * 4, kv_heads, 5, head_dim)


def test_on_a_cpu_the_static_step_is_the_default_only_for_long_prompts(tokenizer, monkeypatch):
    made = []
    init = StaticDecoder.__init__
    monkeypatch.setattr(StaticDecoder, "__init__", lambda self, *a, **k: made.append(init(self, *a, **k)))
    model = tiny_model(tokenizer, "qwen2")
    prompt_len = len(tokenizer(PROMPTS[1])["input_ids"])
    generate(model, tokenizer, PROMPTS[1:2], n=2, max_new_tokens=prompt_len + 1)
    assert not made
    generate(model, tokenizer, PROMPTS[1:2], n=2, max_new_tokens=prompt_len)
    assert len(made) == 1


def test_cuda_graphs_replay_the_eager_step(tokenizer):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: CUDA graphs cannot run on a CPU (bench/gpu_check.py --all checks them on a GPU)")
    model = tiny_model(tokenizer, "qwen2", initializer_range=0.3).cuda()
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + list(range(40, 60))
    settings = dict(n=3, max_new_tokens=80, temperature=1.0, seed=1)
    graphs = generate(model, tokenizer, PROMPTS, cuda_graphs=True, **settings)
    eager = generate(model, tokenizer, PROMPTS, cuda_graphs=False, **settings)
    assert [(s.token_ids, s.logprobs) for s in graphs] == [(s.token_ids, s.logprobs) for s in eager]


@pytest.mark.parametrize("static", [True, False])
def test_finish_share_ends_the_long_tail_as_cut_prefixes(tokenizer, static):
    """Once half the rows are done, the rest end at that sync point as "early": the same tokens the full run gives
    up to there (each row's draws are its own), no EOS, all cut at the same step."""
    model = tiny_model(tokenizer, "qwen2", initializer_range=0.3)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id] + list(range(40, 70))
    settings = dict(n=4, max_new_tokens=40, temperature=1.0, seed=2, sync_every=4, static=static)
    full = generate(model, tokenizer, PROMPTS, **settings)
    cut = generate(model, tokenizer, PROMPTS, finish_share=0.5, **settings)
    early = [s for s in cut if s.finish_reason == "early"]
    assert early and len(early) <= len(cut) / 2
    assert len({len(s.token_ids) for s in early}) == 1 and len(early[0].token_ids) % 4 == 0
    for a, b in zip(cut, full):
        assert a.token_ids == b.token_ids[:len(a.token_ids)]
        assert (a.finish_reason == "early") == (a.token_ids != b.token_ids)
    with pytest.raises(ValueError, match="finish_share"):
        generate(model, tokenizer, PROMPTS, finish_share=0.0)
