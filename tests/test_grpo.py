"""
Tests for grpo.py on CPU, with a tiny random Qwen2 model and a tokenizer trained here (no downloads):
the loss against a restatement of TRL 1.16's formulas (value and gradient, four aggregations), advantages on
hand-computed cases, the completion mask, the format reward, the gate, a short run that learns, SFT, resume after
a crash, and 1 rank vs 2 ranks (DDP and FSDP2 over gloo) on the same global batch.

    python -m pytest -q tests/test_grpo.py
"""

import json
import math
import os
import statistics
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import grpo  # noqa: E402
import synth  # noqa: E402
from synth import Sample, generate  # noqa: E402

REFERENCE = {"reasoning": "add the two numbers", "code": "def add(a, b):\n    return a + b"}


# ---------------------------------------------------------------------------------------------------------------
# Helpers: problem files, stand-in tasks and engines (the fixtures model_dir and even_data are in conftest.py)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def even_outcome(args, problems, samples):
    """A task any model can learn in a few steps: the share of completion tokens whose id is even."""
    return [sum(t % 2 == 0 for t in s.token_ids) / len(s.token_ids) for s in samples]


def per_prompt_generate(model, tokenizer, prompts, n=1, seed=0, **kwargs):
    """The engine, seeded per prompt instead of per call: the same problem gets the same samples whichever rank
    generates it, so 1 and 2 ranks see the same global batch."""
    samples = []
    for i, prompt in enumerate(prompts):
        for s in generate(model, tokenizer, [prompt], n=n, seed=zlib.crc32(prompt.encode()), **kwargs):
            s.prompt_index = i
            samples.append(s)
    return samples


def register_even_task():
    grpo.TASKS["even"] = dict(format=lambda text: 0.0, outcome=even_outcome)


def run_args(model_dir, data, out, *extra):
    return grpo.parse_args(["--model", model_dir, "--data", data, "--out", str(out), "--reward", "outcome",
                            "--prompt-format", "raw", "--max-new-tokens", "8", "--dump-every", "0",
                            "--save-every", "0", *map(str, extra)])


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(checkpoint):
    return load_file(str(Path(checkpoint) / "model.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# The loss: TRL 1.16's formulas restated from its _compute_loss (fp32), against grpo.py's weighted token sum


def trl_reference_loss(lp, old, ref, mask, adv, loss_type, eps_low, eps_high, beta, max_len, ga=1, n_gen=None, procs=1):
    r = torch.exp(lp - old)
    rc = r.clamp(1 - eps_low, 1 + eps_high)
    loss = -torch.min(r * adv[:, None], rc * adv[:, None])
    if beta:
        d = ref - lp
        loss = loss + beta * (torch.exp(d) - d - 1) * r
    if loss_type == "grpo":
        return ((loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean() / ga
    if loss_type == "bnpo":
        return (loss * mask).sum() / mask.sum().clamp(min=1) / ga
    if loss_type == "dr_grpo":
        return (loss * mask).sum() / (loss.size(0) * max_len) / ga
    return (loss * mask).sum() / (n_gen / procs)


def random_batch(seed, rows=6, width=7):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(rows, width, generator=g) * 3
    old = lp + 0.3 * torch.randn(rows, width, generator=g)  # off-policy: ratios on both sides of the clip range
    ref = lp + 0.2 * torch.randn(rows, width, generator=g)
    lengths = torch.tensor([width, 3, 0, 5, 1, width, 2, 4])[:rows].clamp(max=width)  # incl. empty and full rows
    mask = (torch.arange(width)[None] < lengths[:, None]).float()
    adv = torch.randn(rows, generator=g)
    return lp, old, ref, mask, adv, lengths


def ours(lp, old, ref, mask, adv, lengths, loss_type, beta, max_len, n_sequences=None, total_tokens=None):
    """grpo.py's loss: masked tokens flattened, each weighted by sequence_weights."""
    keep = mask.bool()
    n_tokens = lengths.tolist()
    w = grpo.sequence_weights(loss_type, n_tokens, n_sequences or len(n_tokens),
                              total_tokens if total_tokens is not None else sum(n_tokens), max_len)
    token_w = torch.tensor(w)[:, None].expand_as(mask)[keep]
    token_adv = adv[:, None].expand_as(mask)[keep]
    loss, _, _ = grpo.per_token_loss(lp[keep], old[keep], ref[keep], token_adv, 0.2, 0.28, beta)
    return (loss * token_w).sum()


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("on_policy", [True, False])
def test_loss_value_and_gradient_match_trl(loss_type, beta, on_policy):
    lp, old, ref, mask, adv, lengths = random_batch(1)
    if on_policy:
        old = lp.clone()
    max_len = 12
    lp_ref = lp.clone().requires_grad_()
    expected = trl_reference_loss(lp_ref, old, ref, mask, adv, loss_type, 0.2, 0.28, beta, max_len,
                                  n_gen=mask.sum())
    expected.backward()
    lp_ours = lp.clone().requires_grad_()
    got = ours(lp_ours, old, ref, mask, adv, lengths, loss_type, beta, max_len)
    got.backward()
    assert abs(got.item() - expected.item()) < 1e-6
    assert torch.allclose(lp_ours.grad, lp_ref.grad, atol=1e-6, rtol=0)
    assert lp_ours.grad.abs().sum() > 0 and (lp_ours.grad[mask == 0] == 0).all()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_global_weights_equal_trl_over_micro_batches_and_ranks(loss_type):
    """TRL with 2 ranks x 2 equal micro-batches (loss / GA per micro-batch, DDP mean over ranks) takes the same
    gradient as grpo.py's one weighted sum over the whole batch, however we split it for memory."""
    lp, old, ref, mask, adv, lengths = random_batch(2, rows=8, width=5)
    max_len, n_gen = 5, mask.sum()
    lp_trl = lp.clone().requires_grad_()
    parts = [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]  # (rank 0: mb 0, 1), (rank 1: mb 0, 1)
    per_rank = [sum(trl_reference_loss(lp_trl[s], old[s], ref[s], mask[s], adv[s], loss_type, 0.2, 0.28, 0.04,
                                       max_len, ga=2, n_gen=n_gen, procs=2) for s in parts[r * 2:r * 2 + 2])
                for r in range(2)]
    (sum(per_rank) / 2).backward()  # DDP averages the ranks' gradients
    lp_ours = lp.clone().requires_grad_()
    total = sum(ours(lp_ours[s], old[s], ref[s], mask[s], adv[s], lengths[s], loss_type, 0.04, max_len,
                     n_sequences=8, total_tokens=int(n_gen)) for s in [slice(0, 3), slice(3, 8)])
    total.backward()
    assert torch.allclose(lp_ours.grad, lp_trl.grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Advantages, mask, format reward, gate


def test_advantages_hand_computed():
    a, zero = grpo.group_advantages(torch.tensor([1.0, 0, 0, 0, 2, 2, 2, 2]), 4, "group")
    std = statistics.stdev([1, 0, 0, 0])  # Bessel: 0.5
    expected = [0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3 + [0.0] * 4
    assert torch.allclose(a, torch.tensor(expected), atol=1e-6)
    assert zero.tolist() == [False] * 4 + [True] * 4

    a, _ = grpo.group_advantages(torch.tensor([1.0, 0, 0, 0, 2, 2, 2, 3]), 4, "batch")
    batch_std = statistics.stdev([1, 0, 0, 0, 2, 2, 2, 3])
    expected = [(r - m) / (batch_std + 1e-4) for r, m in zip([1, 0, 0, 0, 2, 2, 2, 3], [0.25] * 4 + [2.25] * 4)]
    assert torch.allclose(a, torch.tensor(expected), atol=1e-6)

    a, _ = grpo.group_advantages(torch.tensor([3.0, 1, 2, 2]), 2, "none")
    assert a.tolist() == [1.0, -1.0, 0.0, 0.0]

    a, zero = grpo.group_advantages(torch.tensor([1.0, math.nan, 0, 0]), 4, "group")  # NaN: left out, A = 0
    std = statistics.stdev([1, 0, 0])
    assert torch.allclose(a, torch.tensor([(2 / 3) / (std + 1e-4), 0, (-1 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4)]),
                          atol=1e-6)


def test_completion_mask_keeps_first_eos_only():
    eos = {7, 9}
    assert grpo.completion_length([1, 2, 7, 3, 9], eos) == 3
    assert grpo.completion_length([9, 7], eos) == 1
    assert grpo.completion_length([1, 2, 3], eos) == 3


def test_format_reward():
    good = "<think>\nsum them\n</think>\n<answer>\n```python\ndef f(a, b):\n    return a + b\n```\n</answer>\n"
    assert grpo.code_format_reward(good) == 1.0
    assert grpo.code_format_reward(synth.format_completion("sum them", "def f(): pass")) == 1.0
    bad = [good.replace("<think>", ""), good.replace("```python", "").replace("```", ""), good + "trailing words",
           "<think> </think><answer>\n```python\nx = 1\n```\n</answer>", good.replace("</answer>", "</answer><answer>"),
           "<answer>\n```python\nx = 1\n```\n</answer><think>a</think>", "def f(a, b): return a + b"]
    assert [grpo.code_format_reward(t) for t in bad] == [0.0] * len(bad)


def test_combine_rewards_gate():
    r_fmt, r_out, r_proc = np.array([1.0, 1, 0, 1]), np.array([1.0, 0, 1, 0]), np.array([0.9, 0.8, 0.5, np.nan])
    assert grpo.combine_rewards(r_fmt, r_out, r_proc, "gated", 1.0).tolist() == [2.9, 1.0, 1.5, 1.0]
    assert grpo.combine_rewards(r_fmt, r_out, r_proc, "ungated", 1.0).tolist() == [2.9, 1.8, 1.5, 1.0]
    assert grpo.combine_rewards(r_fmt, r_out, r_proc, "outcome", 1.0).tolist() == [2.0, 1.0, 1.0, 1.0]
    assert grpo.combine_rewards(r_fmt, r_out, r_proc, "gated", 0.5).tolist() == [2.45, 1.0, 1.25, 1.0]


@pytest.mark.parametrize("mode,proc_all", [("gated", False), ("gated", True), ("ungated", False)])
def test_gate_with_real_execution(monkeypatch, mode, proc_all):
    """A passing, a failing and a badly formatted sample run through execute.py; the reward model (faked: it
    loves every reasoning, 0.9) is asked only about passing samples when gated, and a failing sample's score
    never reaches the reward unless ungated."""
    import reward
    asked = []

    def fake_score(model, tokenizer, problems, reasonings, codes=None, batch_size=16):
        asked.extend(reasonings)
        return [0.9] * len(reasonings)

    monkeypatch.setattr(reward, "score", fake_score)
    problem = dict(task_id="add", task="code", prompt="add", code_prefix="", code_prompt="",
                   tests={"base": {"type": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3},
                                                                               {"args": [2, 2], "expected": 4}]}})
    texts = [synth.format_completion("right", "def add(a, b):\n    return a + b"),
             synth.format_completion("wrong", "def add(a, b):\n    return a - b"),
             "```python\ndef add(a, b):\n    return a + b\n```"]
    samples = [Sample(0, t, [1], [0.0], "eos", [1]) for t in texts]
    args = grpo.parse_args(["--reward", mode, "--exec-workers", "2"] + (["--proc-all"] if proc_all else []))
    parts = grpo.compute_rewards(args, [problem] * 3, samples, (None, None))
    assert parts["r_fmt"].tolist() == [1.0, 1.0, 0.0]
    assert parts["r_out"].tolist() == [1.0, 0.0, 1.0]
    if mode == "gated":
        assert parts["reward"].tolist() == [2.9, 1.0, 1.9]
        assert any("wrong" in r for r in asked) == proc_all
    else:
        assert parts["reward"].tolist() == [2.9, 1.9, 1.9]
        assert any("wrong" in r for r in asked)
    if mode == "gated" and not proc_all:
        assert np.isnan(parts["r_proc"][1])  # never scored: the logs show no R_proc for failing samples
    else:
        assert parts["r_proc"][1] == 0.9


# ---------------------------------------------------------------------------------------------------------------
# Log-probs and micro-batches


def test_gradient_checkpointing_keeps_the_gradient_and_the_fast_decode_step(model_dir, tmp_path):
    """transformers' checkpointing also hooks the embeddings (for adapters); build_policy removes that hook, which
    would otherwise keep generate() off its fast step on every GPU run (checkpointing is the GPU default)."""
    seqs = [dict(ids=[5, 6, 7, 8, 9, 10], n_prompt=2, advantage=1.0, weight=0.2),
            dict(ids=[5, 6, 11, 12], n_prompt=2, advantage=-0.5, weight=0.3)]
    grads = {}
    for flag in ("--grad-ckpt", "--no-grad-ckpt"):
        args = run_args(model_dir, "unused.jsonl", tmp_path, flag)
        _, policy, _ = grpo.build_policy(args, model_dir, torch.device("cpu"), world=1)
        checkpointed = any(getattr(m, "gradient_checkpointing", False) for m in policy.lm.modules())
        assert checkpointed == (flag == "--grad-ckpt")
        assert synth.fast_decode_step(policy.lm, synth.new_cache(policy.lm, 8), 8) is not None, flag
        model_inputs, advantages, weights = grpo.collate(seqs, 0, "cpu")
        (policy(**model_inputs)[0] * advantages * weights).sum().backward()
        grads[flag] = [p.grad.clone() for p in policy.parameters()]
    for with_ckpt, without in zip(grads["--grad-ckpt"], grads["--no-grad-ckpt"]):
        torch.testing.assert_close(with_ckpt, without, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("share_prompts", [False, True])
def test_logprobs_match_log_softmax_and_split_does_not_change_gradient(model_dir, monkeypatch, share_prompts):
    lm = grpo.load_model(model_dir, dtype=torch.float32, device="cpu")[0]
    policy = grpo.Policy(lm, temperature=0.7).train()
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(0, 300, (n,), generator=g).tolist()
    prompts = [ids(3), ids(2), ids(4)]
    # two groups of samples sharing a prompt (prompts of 3, 2 and 4 tokens: the shared layout pads and masks them),
    # and a completion of a single token (nothing of it is ever an input)
    seqs = [dict(ids=prompts[p] + ids(n), n_prompt=len(prompts[p]), advantage=a, weight=w)
            for p, n, a, w in [(0, 6, 1.0, 0.1), (1, 3, -0.5, 0.2), (2, 8, 0.3, 0.05), (0, 4, 0.7, 0.1),
                               (1, 1, 0.2, 0.3), (0, 6, -1.0, 0.1)]]
    model_inputs, _, _ = grpo.collate(seqs, 0, "cpu", share_prompts)
    assert ("prompt_ids" in model_inputs) == share_prompts
    if share_prompts:
        assert model_inputs["prompt_ids"].shape[0] == 3  # one row per distinct prompt
        # no prompt with several samples: nothing to share, one forward on whole sequences
        assert "prompt_ids" not in grpo.collate(seqs[:3], 0, "cpu", True)[0]
    logps, _ = policy(**model_inputs)
    full = torch.cat([(lm(torch.tensor([s["ids"]])).logits[0, s["n_prompt"] - 1:-1] / 0.7).log_softmax(-1)
                      .gather(-1, torch.tensor(s["ids"][s["n_prompt"]:])[:, None])[:, 0] for s in seqs])
    assert torch.allclose(logps, full, atol=1e-5)

    def grads(batches, chunk, share):
        monkeypatch.setattr(grpo, "LOGITS_PER_CHUNK", chunk)
        policy.zero_grad()
        for batch in batches:
            model_inputs, adv, w = grpo.collate([seqs[i] for i in batch], 0, "cpu", share)
            (policy(**model_inputs)[0] * adv * w).sum().backward()
        return [p.grad.clone() for p in policy.parameters()]

    whole = grads([list(range(len(seqs)))], 1 << 27, False)
    # equal-length prompts only: the shared layout needs no attention mask
    assert "attention_mask" not in grpo.collate([seqs[0], seqs[3], seqs[5]], 0, "cpu", True)[0]
    budget = 20  # [12], [9, 9] (one prompt, two samples), [7, 5], [3]
    assert len(grpo.micro_batches([len(s["ids"]) for s in seqs], budget)) == 4
    split = grads(grpo.micro_batches([len(s["ids"]) for s in seqs], budget), 300 * 4, share_prompts)  # + recompute
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, split))
    if share_prompts:
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, grads([list(range(len(seqs)))], 1 << 27, True)))


# ---------------------------------------------------------------------------------------------------------------
# Whole runs


def test_config_errors(model_dir, even_data, tmp_path):
    def error(*argv):
        with pytest.raises(SystemExit) as e:
            grpo.train(grpo.parse_args(["--model", model_dir, "--data", even_data, "--out", str(tmp_path / "o"),
                                        *argv]))
        return str(e.value)

    assert "not divisible by --group-size 8" in error("--reward", "outcome", "--batch-size", "12")
    assert "needs --reward-model" in error("--batch-size", "16")
    assert "does not exist" in error("--reward", "outcome", "--data", str(tmp_path / "missing.jsonl"))
    assert "launch with torchrun" in error("--reward", "outcome", "--batch-size", "16", "--parallel", "fsdp")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "tests": {"type": "call", "cases": []}}])
    assert "bad.jsonl:1" in error("--reward", "outcome", "--batch-size", "16", "--data", bad)
    assert "--finish-share 0.0 must be in (0, 1]" in error("--reward", "outcome", "--batch-size", "16",
                                                           "--finish-share", "0")


def test_short_run_raises_mean_reward(model_dir, even_data, tmp_path):
    grpo.train(run_args(model_dir, even_data, tmp_path / "run", "--batch-size", 32, "--group-size", 8, "--steps", 10,
                        "--lr", 1e-2))
    rewards = [m["reward"] for m in metrics(tmp_path / "run")]
    assert len(rewards) == 10
    assert np.mean(rewards[-3:]) > np.mean(rewards[:2]) + 0.15, rewards


def test_sft_lowers_loss_and_writes_checkpoint(model_dir, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"Write add{i}.", "tests": {"type": "call", "fn_name": "add",
                                                 "cases": [{"args": [1, 2], "expected": 3}]}, "reference": REFERENCE}
                                                for i in range(4)])
    grpo.train(run_args(model_dir, data, tmp_path / "sft", "--algo", "sft", "--batch-size", 4, "--steps", 8,
                        "--lr", 1e-2))
    losses = [m["loss"] for m in metrics(tmp_path / "sft")]
    assert losses[-1] < 0.7 * losses[0], losses
    checkpoint = grpo.latest_checkpoint(str(tmp_path / "sft"))
    assert checkpoint.endswith("step_000008")
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(checkpoint).num_parameters() > 0


def test_resume_after_crash_continues_like_an_uninterrupted_run(model_dir, even_data, tmp_path, monkeypatch):
    common = ["--batch-size", 8, "--group-size", 2, "--steps", 4, "--save-every", 2, "--dump-every", 1,
              "--lr", 1e-2, "--num-iterations", 2]
    grpo.train(run_args(model_dir, even_data, tmp_path / "a", *common))

    real_replace = os.replace

    def crash_on_last_save(src, dst):  # the process dies while writing step 4: after the files, before the rename
        if dst.endswith("step_000004"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(grpo.os, "replace", crash_on_last_save)
    with pytest.raises(KeyboardInterrupt):
        grpo.train(run_args(model_dir, even_data, tmp_path / "b", *common))
    monkeypatch.setattr(grpo.os, "replace", real_replace)
    assert grpo.latest_checkpoint(str(tmp_path / "b")).endswith("step_000002")  # the half-written one is ignored
    with pytest.raises(SystemExit, match="--resume"):
        grpo.train(run_args(model_dir, even_data, tmp_path / "b", *common))
    grpo.train(run_args(model_dir, even_data, tmp_path / "b", *common, "--resume"))

    for step in range(4):  # same problems, same samples, step by step
        a, b = [[(r["task_id"], r["completion"]) for r in map(json.loads, open(tmp_path / run / "samples" /
                f"step_{step:06d}.jsonl"))] for run in ("a", "b")]
        assert a == b
    assert [m["step"] for m in metrics(tmp_path / "b")] == [1, 2, 3, 4]
    wa, wb = weights(tmp_path / "a" / "step_000004"), weights(tmp_path / "b" / "step_000004")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["model.norm.weight"], weights(tmp_path / "a" / "step_000002")["model.norm.weight"])


def scripted_generate(model, tokenizer, prompts, n=1, seed=0, temperature=1.0, **kwargs):
    """Stands in for the engine: per prompt, a right, a wrong and a badly formatted answer in turn (greedy: the
    right one), so rewards, the gate and the evaluation have known outcomes."""
    from synth import encode_prompt
    texts = [synth.format_completion("add them", "def add(a, b):\n    return a + b"),
             synth.format_completion("subtract them", "def add(a, b):\n    return a - b"),
             "def add(a, b):\n    return a * b"]
    samples = []
    for i, prompt in enumerate(prompts):
        for j in range(n):
            text = texts[0 if temperature == 0 else j % 3]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            samples.append(Sample(i, text, ids, [0.0] * len(ids), "eos", encode_prompt(tokenizer, prompt)))
    return samples


def test_gated_run_with_a_real_reward_model_and_evaluation(model_dir, tmp_path, monkeypatch):
    """End to end through execute.py, a reward model saved by reward.py and the periodic evaluation: a failing
    sample's R_proc is computed (--proc-all) and logged, but never reaches its reward."""
    import reward
    rm = reward.RewardModel(reward.load_backbone(model_dir), {"include_code": False, "max_length": 128})
    reward.save_reward_model(rm, reward.load_tokenizer(model_dir), tmp_path / "rm")
    monkeypatch.setattr(grpo, "generate", scripted_generate)
    tests = {"type": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}, {"args": [2, 2], "expected": 4}]}
    data = write_jsonl(tmp_path / "add.jsonl", [{"task_id": f"add{i}", "prompt": f"Write add(a, b), #{i}.",
                                                 "tests": tests} for i in range(2)])
    out = tmp_path / "gated"
    grpo.train(run_args(model_dir, data, out, "--reward", "gated", "--reward-model", tmp_path / "rm", "--proc-all",
                        "--batch-size", 6, "--group-size", 3, "--steps", 2, "--lr", 1e-3, "--dump-every", 1,
                        "--eval-data", data, "--eval-every", 2, "--exec-workers", 2))
    rows = [json.loads(line) for line in open(out / "samples" / "step_000000.jsonl")]
    assert [r["r_out"] for r in rows] == [1.0, 0.0, 0.0] * 2 and [r["r_fmt"] for r in rows] == [1.0, 1.0, 0.0] * 2
    assert all(0 < r["r_proc"] < 1 for r in rows)  # every sample scored, for the logs
    assert all(r["reward"] == pytest.approx(r["r_fmt"] + r["r_out"] + r["r_out"] * r["r_proc"]) for r in rows)
    logged = metrics(out)
    assert [m["step"] for m in logged] == [0, 1, 2]
    assert logged[0]["eval/pass@1"] == 1.0 and logged[2]["eval/pass@1"] == 1.0 and logged[2]["eval/format"] == 1.0
    assert logged[1]["pass_rate"] == pytest.approx(1 / 3) and logged[1]["r_proc_fail"] is not None


def rank_test_args(model_dir, data, out, parallel):
    # FSDP also recomputes activations (gradient checkpointing), which must not change the update either
    return run_args(model_dir, data, out, "--batch-size", 8, "--group-size", 2, "--steps", 2, "--lr", 1e-3,
                    "--num-iterations", 2, "--token-budget", 24, "--parallel", parallel,
                    "--grad-ckpt" if parallel == "fsdp" else "--no-grad-ckpt")


def test_two_ranks_give_the_same_update_as_one(model_dir, even_data, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "generate", per_prompt_generate)
    grpo.train(rank_test_args(model_dir, even_data, tmp_path / "one", "ddp"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, model_dir, even_data, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = weights(tmp_path / "one" / "step_000002")
    start = load_file(str(Path(model_dir) / "model.safetensors"))
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-4  # the update is real, so agreeing on it means something
    for run in ("ddp", "fsdp"):
        # with the weights gathered for decoding, FSDP's generation runs the fast decode step too
        for rank in (0, 1):
            used = json.loads((tmp_path / run / f"fast_steps_rank{rank}.json").read_text())
            assert used and all(used), (run, rank, used)
        other = weights(tmp_path / run / "step_000002")
        assert set(other) == set(one)
        diff = max((one[k] - other[k]).abs().max().item() for k in one)
        # float sums in another order nudge Adam's normalised steps (size lr = 1e-3) by ~1e-6; any real
        # disagreement (another sample, another normaliser, a missed update) moves some weight by ~lr
        assert diff < 1e-5, (run, diff)
        assert [m["reward"] for m in metrics(tmp_path / run)] == pytest.approx([m["reward"] for m in metrics(tmp_path / "one")])


if __name__ == "__main__":  # the 2-rank side of the test above, under torchrun: DDP, then FSDP2
    model_path, data, out = sys.argv[1:4]
    register_even_task()
    grpo.generate = per_prompt_generate
    runs_written_out, fast_steps = synth.runs_written_out, []

    def counted(model):  # which generate() calls ran a written-out decode step (static or over the growing cache)
        fast_steps.append(runs_written_out(model))
        return fast_steps[-1]

    synth.runs_written_out = counted
    for parallel in ("ddp", "fsdp"):
        fast_steps.clear()
        grpo.train(rank_test_args(model_path, data, Path(out) / parallel, parallel))
        (Path(out) / parallel / f"fast_steps_rank{torch.distributed.get_rank()}.json").write_text(json.dumps(fast_steps))
    torch.distributed.destroy_process_group()
