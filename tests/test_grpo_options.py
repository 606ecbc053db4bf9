"""
Tests for grpo.py's options beyond the paper's method, each off by default: the engine/trainer log-prob mismatch
and its importance-sampling correction (--rollout-is), dynamic sampling (--dynamic-sampling), DAPO's soft overlong
punishment (--overlong-buffer) and the truncation warning, and rewards overlapped with decoding (--overlap-rewards).
CPU, tiny random models, no downloads.

    python -m pytest -q tests/test_grpo_options.py
"""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import grpo  # noqa: E402
import synth  # noqa: E402
from synth import Sample, generate  # noqa: E402
from test_grpo import (even_outcome, metrics, per_prompt_generate, register_even_task, run_args,  # noqa: E402
                       scripted_generate, trl_reference_loss, weights, write_jsonl)


# ---------------------------------------------------------------------------------------------------------------
# 1. Engine/trainer mismatch: measured every step, corrected with --rollout-is


def trl_rollout_is(train, engine, mask, mode, cap):
    """TRL 1.16's vllm_importance_sampling_mode, restated on (rows, tokens) tensors with a completion mask."""
    diff = (train - engine) * mask
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    ratio = ratio.clamp(max=cap) if mode.endswith("truncate") else ratio.masked_fill(ratio > cap, 0.0)
    return ratio.expand_as(train)


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_rollout_is_weights_match_trl(mode):
    g = torch.Generator().manual_seed(0)
    rows, width = 5, 6
    lengths = torch.tensor([6, 3, 1, 4, 5])
    mask = (torch.arange(width)[None] < lengths[:, None]).float()
    train = -torch.rand(rows, width, generator=g) * 3
    engine = train + 0.6 * torch.randn(rows, width, generator=g)  # ratios on both sides of the cap
    keep = mask.bool()
    index = torch.arange(rows)[:, None].expand_as(mask)[keep]
    ours = grpo.rollout_is_weights(train[keep], engine[keep], index, mode, 1.5)
    expected = trl_rollout_is(train, engine, mask, mode, 1.5)[keep]
    assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-6)
    assert (ours <= 1.5).all() and (ours == 0).any() == mode.endswith("mask")
    # no gap, no correction: every weight is exactly 1
    assert torch.equal(grpo.rollout_is_weights(train[keep], train[keep], index, mode, 1.5), torch.ones(len(index)))


@pytest.fixture
def loss_calls(monkeypatch):
    """Every per_token_loss call of the runs in a test, in order: (PPO ratio, --rollout-is weights or None)."""
    calls, real_loss = [], grpo.per_token_loss

    def recording_loss(*args):
        loss, ratio, kl = real_loss(*args)
        calls.append((ratio.detach().clone(), args[-1]))
        return loss, ratio, kl

    monkeypatch.setattr(grpo, "per_token_loss", recording_loss)
    return calls


def first_and_second_updates(calls, steps):
    """With --num-iterations 2 and one micro-batch a step: the calls of each step's first and second update."""
    assert len(calls) == 2 * steps
    return calls[0::2], calls[1::2]


def test_first_on_policy_update_is_exact_in_fp32(model_dir, even_data, tmp_path, loss_calls):
    """slime's invariant: in fp32 the first update on a batch has ratio exactly 1 and nothing clipped (the sampling
    policy's log-probs come from their own forward: two updates per batch), and the engine's log-probs equal the
    trainer's to rounding (logged gap < 1e-5)."""
    grpo.train(run_args(model_dir, even_data, tmp_path / "fp32", "--batch-size", 16, "--group-size", 4, "--steps", 2,
                        "--max-new-tokens", 16, "--lr", 1e-2, "--num-iterations", 2, "--rollout-is", "sequence_mask"))
    first, second = first_and_second_updates(loss_calls, 2)
    assert all(torch.equal(ratio, torch.ones_like(ratio)) for ratio, _ in first)
    assert all(not torch.equal(ratio, torch.ones_like(ratio)) for ratio, _ in second)  # the weights did move
    assert all(weights is not None and (weights - 1).abs().max() < 1e-4 for _, weights in loss_calls)
    for m in metrics(tmp_path / "fp32"):
        assert 0 <= m["sampling/sampling_logp_difference/mean"] <= m["sampling/sampling_logp_difference/max"] < 1e-5
        assert abs(m["sampling/importance_sampling_ratio/min"] - 1) < 1e-4
        assert abs(m["sampling/importance_sampling_ratio/max"] - 1) < 1e-4


def optimize_once(args, model_dir, seqs):
    module, policy, _ = grpo.build_policy(args, model_dir, torch.device("cpu"), world=1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    stats, _ = grpo.optimize(args, module, policy, None, optimizer, scheduler, seqs, 0, torch.device("cpu"), 1)
    return stats, [p.detach().clone() for p in policy.parameters()]


def test_correction_changes_nothing_when_the_gap_is_zero(model_dir, tmp_path):
    args = run_args(model_dir, "unused.jsonl", tmp_path, "--lr", 1e-3, "--precision", "fp32", "--no-grad-ckpt")
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(0, 300, (n,), generator=g).tolist()
    prompts = [ids(3), ids(3)]
    seqs = [dict(ids=prompts[k % 2] + ids(n), n_prompt=3, advantage=a, weight=0.05, n_tokens=n)
            for k, (n, a) in enumerate([(6, 1.0), (3, -0.5), (5, 0.3), (2, -0.8)])]
    # the engine's log-probs made equal to the trainer's own: the same forward on the same micro-batch
    _, policy, _ = grpo.build_policy(args, model_dir, torch.device("cpu"), world=1)
    [batch] = grpo.micro_batches([len(s["ids"]) for s in seqs], args.token_budget)
    with torch.no_grad():
        logps = policy(**grpo.collate([seqs[i] for i in batch], 0, "cpu", share_prompts=True)[0])[0].tolist()
    for i in batch:
        n = len(seqs[i]["ids"]) - seqs[i]["n_prompt"]
        seqs[i]["engine_logps"], logps = logps[:n], logps[n:]
    stats, plain = optimize_once(args, model_dir, seqs)
    assert stats["logp_diff_max"] == 0 and stats["logp_diff_sum"] == 0 and stats["mismatch_tokens"] == 16
    for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        args.rollout_is, args.rollout_is_cap = mode, 1.0  # even at the tightest cap
        stats, corrected = optimize_once(args, model_dir, seqs)
        assert stats["is_ratio_max"] == 1 and -stats["is_ratio_neg_min"] == 1
        assert all(torch.equal(a, b) for a, b in zip(plain, corrected)), mode
    assert any(not torch.equal(a, b) for a, b in zip(plain, grpo.build_policy(args, model_dir, torch.device("cpu"), 1)[1].parameters()))


def test_bf16_gap_is_logged_and_the_correction_applies(model_dir, even_data, tmp_path, loss_calls):
    common = ["--batch-size", 16, "--group-size", 4, "--steps", 1, "--max-new-tokens", 16, "--lr", 1e-2,
              "--precision", "bf16", "--num-iterations", 2]
    runs = {"off": [], "token_mask": ["--rollout-is", "token_mask", "--rollout-is-cap", 1.0005],
            "sequence_truncate": ["--rollout-is", "sequence_truncate", "--rollout-is-cap", 1.0]}
    for name, extra in runs.items():
        grpo.train(run_args(model_dir, even_data, tmp_path / name, *common, *extra))
    first, _ = first_and_second_updates(loss_calls, len(runs))
    # under autocast too, the first update's ratio is exactly 1: the trainer's two forwards agree to the bit
    assert all(torch.equal(ratio, torch.ones_like(ratio)) for ratio, _ in first)
    assert first[0][1] is None and all(weights is not None for _, weights in first[1:])
    logged = {name: metrics(tmp_path / name)[0] for name in runs}
    for m in logged.values():  # the same samples, the same gap: clearly above fp32's rounding
        assert m["sampling/sampling_logp_difference/mean"] == logged["off"]["sampling/sampling_logp_difference/mean"]
        assert m["sampling/sampling_logp_difference/mean"] > 1e-5
    assert "sampling/importance_sampling_ratio/mean" not in logged["off"]
    assert logged["token_mask"]["sampling/importance_sampling_ratio/min"] == 0  # some tokens masked ...
    assert logged["token_mask"]["sampling/importance_sampling_ratio/max"] > 0.99  # ... not all
    assert logged["sequence_truncate"]["sampling/importance_sampling_ratio/max"] <= 1.0
    assert logged["sequence_truncate"]["sampling/importance_sampling_ratio/min"] < 1.0
    plain = weights(tmp_path / "off" / "step_000001")
    for name in ("token_mask", "sequence_truncate"):
        corrected = weights(tmp_path / name / "step_000001")
        assert max((plain[k] - corrected[k]).abs().max().item() for k in plain) > 1e-6, name


def test_every_option_off_the_update_is_trls(model_dir, tmp_path):
    """With the defaults (every option of this file off) one optimize() call moves the weights by exactly the
    gradient of TRL 1.16's loss (test_grpo.trl_reference_loss) on the same inputs, although the engine's log-probs
    differ from the trainer's: the gap is measured, not corrected. SGD at lr 1, so the step is the gradient."""
    defaults = grpo.parse_args([])
    assert (defaults.rollout_is, defaults.dynamic_sampling, defaults.overlong_buffer, defaults.overlap_rewards) == \
        (None, False, 0, False)
    g = torch.Generator().manual_seed(2)
    ids = lambda n: torch.randint(0, 300, (n,), generator=g).tolist()
    prompts = [ids(3), ids(3)]
    lengths, advantages = [6, 3, 5, 2], [1.0, -0.5, 0.3, -0.8]
    seqs = [dict(ids=prompts[k % 2] + ids(n), n_prompt=3, advantage=a, n_tokens=n,
                 engine_logps=(-torch.rand(n, generator=g) * 4).tolist()) for k, (n, a) in enumerate(zip(lengths, advantages))]
    for loss_type in ("dapo", "grpo"):
        args = run_args(model_dir, "unused.jsonl", tmp_path, "--precision", "fp32", "--no-grad-ckpt",
                        "--max-grad-norm", 0, "--loss-type", loss_type)
        for s, w in zip(seqs, grpo.sequence_weights(loss_type, lengths, len(seqs), sum(lengths), args.max_new_tokens)):
            s["weight"] = w
        module, policy, _ = grpo.build_policy(args, model_dir, torch.device("cpu"), world=1)
        start = [p.detach().clone() for p in policy.parameters()]
        optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        stats, _ = grpo.optimize(args, module, policy, None, optimizer, scheduler, seqs, 0, torch.device("cpu"), 1)
        assert stats["logp_diff_max"] > 0.1
        ours = [a - p.detach() for a, p in zip(start, policy.parameters())]

        # TRL: padded (rows, width) log-probs of the completions from the model's own forward, on-policy
        _, policy, _ = grpo.build_policy(args, model_dir, torch.device("cpu"), world=1)
        width = max(lengths)
        lp = torch.zeros(len(seqs), width)
        mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).float()
        for row, s in enumerate(seqs):
            logits = policy.lm(torch.tensor([s["ids"]])).logits[0, s["n_prompt"] - 1:-1] / args.temperature
            target = torch.tensor(s["ids"][s["n_prompt"]:])
            lp[row, :len(target)] = logits.log_softmax(-1).gather(-1, target[:, None])[:, 0]
        loss = trl_reference_loss(lp, lp.detach(), None, mask, torch.tensor(advantages), loss_type, args.epsilon,
                                  args.epsilon_high, 0.0, args.max_new_tokens, n_gen=mask.sum())
        loss.backward()
        for step, p in zip(ours, policy.parameters()):
            torch.testing.assert_close(step, p.grad, atol=1e-6, rtol=1e-4)
        assert max(step.abs().max().item() for step in ours) > 1e-4, loss_type


# ---------------------------------------------------------------------------------------------------------------
# 3. Length: DAPO's soft overlong punishment, and the warning when most completions are cut


def test_overlong_penalty_hand_computed():
    # --max-new-tokens 20, --overlong-buffer 5: free up to 15 tokens, then -P/5 per token, -P at 20
    got = grpo.overlong_penalty([1, 15, 16, 18, 20, 24], 20, 5, 0.5)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.1, -0.3, -0.5, -0.5], abs=1e-12)
    assert grpo.overlong_penalty([0, 10, 20], 20, 20, 1.0).tolist() == pytest.approx([0.0, -0.5, -1.0])

    register_even_task()
    args = grpo.parse_args(["--reward", "outcome", "--max-new-tokens", "20", "--overlong-buffer", "5",
                            "--overlong-penalty", "0.5"])
    samples = [Sample(0, "x", [2] * n, [0.0] * n, "eos", [1]) for n in (10, 16, 20)]  # every token even: R_out 1
    parts = grpo.compute_rewards(args, [{"task": "even"}] * 3, samples, None)
    assert parts["r_len"].tolist() == pytest.approx([0.0, -0.1, -0.5])
    assert parts["reward"].tolist() == pytest.approx([1.0, 0.9, 0.5])
    off = grpo.compute_rewards(grpo.parse_args(["--reward", "outcome"]), [{"task": "even"}] * 3, samples, None)
    assert "r_len" not in off and off["reward"].tolist() == [1.0, 1.0, 1.0]


def test_truncation_warning_once_after_several_steps_in_a_row(model_dir, even_data, tmp_path, capsys):
    watch = grpo.TruncationWatch(steps=3)
    said = [watch.update(r, 64) for r in [0.6, 0.7, 0.5, 0.6, 0.9, 1.0, 1.0, 0.2, 0.9, 0.9, 0.9]]
    assert [k for k, text in enumerate(said) if text] == [5]  # the third cut step in a row, and only once
    assert "--max-new-tokens 64" in said[5]
    # a run whose random policy never stops within 4 tokens
    grpo.train(run_args(model_dir, even_data, tmp_path / "cut", "--batch-size", 8, "--group-size", 2, "--steps", 4,
                        "--max-new-tokens", 4))
    assert all(m["clipped_ratio"] > 0.5 for m in metrics(tmp_path / "cut"))
    assert capsys.readouterr().err.count("WARNING: more than half of the completions hit --max-new-tokens 4") == 1


# ---------------------------------------------------------------------------------------------------------------
# 2. Dynamic sampling


def flat_or_even_outcome(args, problems, samples):
    """Problems marked flat give every sample the same reward (a group with no spread); the others the share of
    even token ids, which differs between samples."""
    return [1.0 if p.get("flat") else even for p, even in zip(problems, even_outcome(args, problems, samples))]


def register_flat_or_even_task():
    grpo.TASKS["flat_or_even"] = dict(format=lambda text: 0.0, outcome=flat_or_even_outcome)


def flat_or_even_data(path, n, flat):
    register_flat_or_even_task()
    return write_jsonl(path, [{"task_id": f"p{i}", "prompt": f"say something {i}", "task": "flat_or_even",
                               "flat": i in flat} for i in range(n)])


def trained_task_ids(out, step=0):
    return [json.loads(line)["task_id"] for line in open(Path(out) / "samples" / f"step_{step:06d}.jsonl")]


def test_dynamic_sampling_keeps_the_batch_and_changes_it_only_by_the_dropped_groups(model_dir, tmp_path,
                                                                                     monkeypatch):
    """Samples depend on the prompt alone (per_prompt_generate), so a hand-built batch of the groups dynamic
    sampling kept must give exactly its update; the default run differs (it trains with the equal-reward groups)."""
    monkeypatch.setattr(grpo, "generate", per_prompt_generate)
    first = grpo.step_problems(8, 4, 0, 0)  # the step's first draw: two of its four problems have no spread
    data = flat_or_even_data(tmp_path / "data.jsonl", 8, flat=first[:2])
    common = ["--batch-size", 16, "--group-size", 4, "--steps", 1, "--lr", 1e-3, "--dump-every", 1]
    grpo.train(run_args(model_dir, data, tmp_path / "dynamic", *common, "--dynamic-sampling"))
    kept = trained_task_ids(tmp_path / "dynamic")
    assert len(kept) == 16  # the batch size is kept
    groups = kept[::4]
    assert all(kept[k] == groups[k // 4] for k in range(16))
    flat_ids = {f"p{i}" for i in first[:2]}
    assert not flat_ids & set(groups)
    assert groups[:2] == [f"p{i}" for i in first[2:]]  # the first draw's groups with spread come first, in order
    m = metrics(tmp_path / "dynamic")[0]
    assert m["dynamic_sampling/extra_rounds"] >= 1 and m["dynamic_sampling/groups_filled"] == 0
    assert m["dynamic_sampling/groups_equal"] >= 2
    assert m["frac_reward_zero_std"] == pytest.approx(m["dynamic_sampling/groups_equal"]
                                                      / m["dynamic_sampling/groups_sampled"])

    # the hand-built batch: the kept groups' problems, in the order a plain step draws them
    rows = [json.loads(line) for line in open(data)]
    by_id = {r["task_id"]: r for r in rows}
    order = grpo.step_problems(4, 4, 0, 0)
    hand = [None] * 4
    for position, index in enumerate(order):
        hand[index] = dict(by_id[groups[position]], task_id=f"h{position}")
    hand_data = write_jsonl(tmp_path / "hand.jsonl", hand)
    grpo.train(run_args(model_dir, hand_data, tmp_path / "hand", *common))
    assert [by_id[t]["prompt"] for t in kept] == \
        [by_id[groups[int(t[1:])]]["prompt"] for t in trained_task_ids(tmp_path / "hand")]
    a, b = weights(tmp_path / "dynamic" / "step_000001"), weights(tmp_path / "hand" / "step_000001")
    assert all(torch.equal(a[k], b[k]) for k in a)

    grpo.train(run_args(model_dir, data, tmp_path / "plain", *common))
    plain = weights(tmp_path / "plain" / "step_000001")
    assert set(trained_task_ids(tmp_path / "plain")) & flat_ids
    assert any(not torch.equal(a[k], plain[k]) for k in a)
    assert metrics(tmp_path / "plain")[0]["frac_reward_zero_std"] == 0.5


def test_dynamic_sampling_fills_a_batch_still_short_after_its_rounds(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "generate", per_prompt_generate)
    data = flat_or_even_data(tmp_path / "flat.jsonl", 6, flat=range(6))
    grpo.train(run_args(model_dir, data, tmp_path / "run", "--batch-size", 8, "--group-size", 4, "--steps", 1,
                        "--dump-every", 1, "--dynamic-sampling", "--dynamic-sampling-rounds", 2))
    assert len(trained_task_ids(tmp_path / "run")) == 8
    m = metrics(tmp_path / "run")[0]
    assert m["dynamic_sampling/extra_rounds"] == 2 and m["dynamic_sampling/groups_filled"] == 2
    assert m["dynamic_sampling/groups_sampled"] == 6 and m["frac_reward_zero_std"] == 1.0


def test_dynamic_sampling_without_equal_groups_is_the_plain_step(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "generate", per_prompt_generate)
    data = flat_or_even_data(tmp_path / "data.jsonl", 4, flat=())
    common = ["--batch-size", 16, "--group-size", 4, "--steps", 1, "--lr", 1e-3, "--dump-every", 1]
    for name, extra in (("plain", []), ("dynamic", ["--dynamic-sampling"])):
        grpo.train(run_args(model_dir, data, tmp_path / name, *common, *extra))
    m = metrics(tmp_path / "dynamic")[0]
    assert m["dynamic_sampling/extra_rounds"] == 0 and m["dynamic_sampling/groups_equal"] == 0
    a, b = [[json.loads(line) for line in open(tmp_path / name / "samples" / "step_000000.jsonl")]
            for name in ("plain", "dynamic")]
    assert a == b
    a, b = weights(tmp_path / "plain" / "step_000001"), weights(tmp_path / "dynamic" / "step_000001")
    assert all(torch.equal(a[k], b[k]) for k in a)


def dynamic_rank_runs(model_dir, data_dir, out):
    """Runs that 1 and 2 ranks must agree on. spread: in step 0, rank 0's two groups have no spread and rank 1's
    both do (a rank deciding on its own rewards would stop while the other samples more: a hang), one extra round
    fills the batch; step 1 needs none. filled: nothing has spread, the batch is filled after two extra rounds.
    Each round draws a number of groups that splits evenly over 1 and 2 ranks, so 2 ranks draw what 1 rank does."""
    common = ["--group-size", 4, "--lr", 1e-3, "--dump-every", 1, "--dynamic-sampling", "--no-grad-ckpt"]
    return {"spread": run_args(model_dir, str(Path(data_dir) / "spread.jsonl"), Path(out) / "spread", "--batch-size", 16,
                               "--steps", 2, *common),
            "filled": run_args(model_dir, str(Path(data_dir) / "filled.jsonl"), Path(out) / "filled", "--batch-size", 8,
                               "--steps", 1, "--dynamic-sampling-rounds", 2, *common)}


def count_rounds(calls, real=grpo.sample_and_score):
    """grpo.sample_and_score, counting its calls (one per round) into `calls`."""
    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    return counted


def test_dynamic_sampling_on_two_ranks_equals_one(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "generate", per_prompt_generate)
    flat_or_even_data(tmp_path / "spread.jsonl", 8, flat=grpo.step_problems(8, 4, 0, 0)[:2])
    flat_or_even_data(tmp_path / "filled.jsonl", 6, flat=range(6))
    rounds = {}
    for name, args in dynamic_rank_runs(model_dir, tmp_path, tmp_path / "one").items():
        monkeypatch.setattr(grpo, "sample_and_score", count_rounds(rounds.setdefault(name, [])))
        grpo.train(args)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, model_dir, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, steps, extra_rounds in (("spread", 2, [1, 0]), ("filled", 1, [2])):
        one, two = metrics(tmp_path / "one" / name), metrics(tmp_path / "two" / name)
        assert [m["dynamic_sampling/extra_rounds"] for m in one] == extra_rounds
        assert len(rounds[name]) == sum(extra_rounds) + steps
        for rank in (0, 1):  # every rank ran every round
            assert json.loads((tmp_path / "two" / name / f"rounds_rank{rank}.json").read_text()) == len(rounds[name])
        keys = [k for k in one[0] if k.startswith(("dynamic_sampling/", "frac_reward_zero_std"))] + ["reward", "reward_std"]
        assert [[m[k] for k in keys] for m in one] == [[m[k] for k in keys] for m in two]
        for step in range(steps):  # the same groups, samples, rewards and advantages, in the same order
            a, b = [[json.loads(line) for line in open(tmp_path / run / name / "samples" / f"step_{step:06d}.jsonl")]
                    for run in ("one", "two")]
            assert len(a) == int(dynamic_rank_runs(model_dir, tmp_path, tmp_path)[name].batch_size) and a == b
        a, b = weights(tmp_path / "one" / name / f"step_{steps:06d}"), weights(tmp_path / "two" / name / f"step_{steps:06d}")
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # DDP's sums in another order: ~1e-6


# ---------------------------------------------------------------------------------------------------------------
# 4. Rewards overlapped with decoding


def test_engine_reports_each_row_when_it_finishes(model_dir):
    lm = grpo.load_model(model_dir, dtype=torch.float32, device="cpu")[0]
    tokenizer = grpo.load_model(model_dir, dtype=torch.float32, device="cpu")[1]
    reports = []
    samples = generate(lm, tokenizer, ["say something", "Write a function"], n=4, max_new_tokens=24, stop=("e",),
                       sync_every=4, seed=3, on_finish=lambda i, s: reports.append((i, s)))
    assert sorted(i for i, _ in reports) == list(range(8))
    assert all(samples[i] is s for i, s in reports)
    # reported at the sync point where the row finished: in order of the chunk of sync_every tokens it ended in
    chunks = [math.ceil(len(s.token_ids) / 4) for _, s in reports]
    assert chunks == sorted(chunks) and chunks[0] < chunks[-1], chunks
    again = generate(lm, tokenizer, ["say something", "Write a function"], n=4, max_new_tokens=24, stop=("e",),
                     sync_every=4, seed=3)
    assert [(s.text, s.token_ids, s.logprobs) for s in again] == [(s.text, s.token_ids, s.logprobs) for s in samples]


ADD_TESTS = {"type": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}, {"args": [2, 2], "expected": 4}]}


def test_overlapped_rewards_equal_the_sequential_ones(monkeypatch):
    import reward
    monkeypatch.setattr(reward, "score", lambda model, tok, problems, reasonings, codes=None, batch_size=16:
                        [0.1 + 0.01 * len(r) for r in reasonings])
    code = dict(task_id="add", task="code", prompt="add", code_prefix="", code_prompt="", tests={"base": ADD_TESTS})
    math_problem = dict(task_id="m", task="math", prompt="1+1", answer="2", tests={})
    texts = [synth.format_completion("right", "def add(a, b):\n    return a + b"),
             synth.format_completion("wrong", "def add(a, b):\n    return a - b"),
             synth.format_completion("raises", "def add(a, b):\n    raise ValueError"),
             synth.format_completion("loops", "def add(a, b):\n    while True: pass"),
             "no code at all", synth.format_math_completion("one and one", "2"),
             synth.format_math_completion("one and one", "3"), synth.format_completion("also right", "add = lambda a, b: b + a")]
    problems = [code] * 5 + [math_problem] * 2 + [code]
    samples = [Sample(0, t, [1], [0.0], "eos", [1]) for t in texts]
    args = grpo.parse_args(["--reward", "gated", "--exec-workers", "2", "--exec-timeout", "0.5"])
    sequential = grpo.compute_rewards(args, problems, samples, (None, None))
    stream = grpo.RewardStream(args, problems)
    order = [3, 0, 6, 2, 5]  # out of order, and rows 1, 4 and 7 never reported by the engine
    for i in order:
        stream.add(i, samples[i])
    overlapped = grpo.compute_rewards(args, problems, samples, (None, None), stream.outcomes(samples))
    assert sequential["r_out"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    for key in sequential:
        assert np.array_equal(sequential[key], overlapped[key], equal_nan=True), key


def reporting_scripted_generate(model, tokenizer, prompts, n=1, seed=0, temperature=1.0, on_finish=None, **kwargs):
    """scripted_generate, reporting its rows to on_finish in a shuffled order (as rows finish out of order)."""
    samples = scripted_generate(model, tokenizer, prompts, n=n, seed=seed, temperature=temperature, **kwargs)
    if on_finish is not None:
        for i in random.Random(seed).sample(range(len(samples)), len(samples)):
            on_finish(i, samples[i])
    return samples


def test_overlapped_run_gives_the_same_rewards_and_update(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "generate", reporting_scripted_generate)
    data = write_jsonl(tmp_path / "add.jsonl", [{"task_id": f"add{i}", "prompt": f"Write add(a, b), #{i}.",
                                                 "tests": ADD_TESTS} for i in range(4)])
    common = ["--batch-size", 12, "--group-size", 3, "--steps", 2, "--lr", 1e-3, "--dump-every", 1,
              "--exec-workers", 2, "--gen-rows", 6]
    for name, extra in (("sequential", []), ("overlapped", ["--overlap-rewards"])):
        grpo.train(run_args(model_dir, data, tmp_path / name, *common, *extra))
    for step in range(2):
        a, b = [[json.loads(line) for line in open(tmp_path / run / "samples" / f"step_{step:06d}.jsonl")]
                for run in ("sequential", "overlapped")]
        assert a == b and [r["r_out"] for r in a] == [1.0, 0.0, 0.0] * 4
    keys = ("reward", "pass_rate", "r_fmt", "loss", "grad_norm", "frac_reward_zero_std")
    assert [[m[k] for k in keys] for m in metrics(tmp_path / "sequential")] == \
        [[m[k] for k in keys] for m in metrics(tmp_path / "overlapped")]
    a, b = weights(tmp_path / "sequential" / "step_000002"), weights(tmp_path / "overlapped" / "step_000002")
    assert all(torch.equal(a[k], b[k]) for k in a)


if __name__ == "__main__":  # the 2-rank side of test_dynamic_sampling_on_two_ranks_equals_one, under torchrun
    model_path, data_dir = sys.argv[1:3]
    register_flat_or_even_task()
    grpo.generate = per_prompt_generate
    for name, args in dynamic_rank_runs(model_path, data_dir, Path(data_dir) / "two").items():
        calls = []
        grpo.sample_and_score = count_rounds(calls)
        grpo.train(args)
        (Path(args.out) / f"rounds_rank{torch.distributed.get_rank()}.json").write_text(json.dumps(len(calls)))
    torch.distributed.destroy_process_group()
