"""
grpo.py: train a code model with Consistency-Gated GRPO (the ReCode paper's CG-GRPO), plain GRPO, or SFT.

Each step samples G completions for each of batch/G problems with synth.py's engine, scores them, and takes a
clipped policy-gradient step whose loss equals TRL 1.16's GRPOTrainer on the same inputs. The reward is Eq. 1:

    R = R_fmt + R_out + 1[R_out = 1] * w * R_proc     --reward gated (CG-GRPO, the default), w = --proc-weight
    R = R_fmt + R_out + w * R_proc                    --reward ungated (the paper's reward-hacking baseline)
    R = R_fmt + R_out                                 --reward outcome (plain GRPO)

R_fmt = 1 for <think>...</think><answer>...</answer> with a fenced code block (math: a \\boxed{} answer) inside.
R_out = 1 when the code passes every test in execute.py's sandbox (math: synth.py's benchmark checker), NaN when the
sandbox itself failed. R_proc in [0, 1] is reward.py's score of (problem, reasoning). metrics.jsonl's r_proc_pass,
r_proc_fail and pass_rate show reward hacking.

    torchrun --standalone --nproc_per_node=1 grpo.py    # no --model: the toy world, the whole pipeline on a CPU
    python grpo.py --model Qwen/Qwen2.5-Coder-1.5B-Instruct --data train.jsonl --reward-model runs/rm --out runs/cg
    torchrun --standalone --nproc_per_node=8 grpo.py --model Qwen/Qwen2.5-Coder-7B-Instruct --data train.jsonl \\
        --reward-model runs/rm --parallel fsdp --max-new-tokens 4096 --out runs/cg-7b     # the paper's setting
    torchrun --standalone --nproc_per_node=8 grpo.py ... --resume          # continue from the newest checkpoint
    python grpo.py --algo sft --model MODEL --data train.jsonl --out runs/sft        # the paper's "+SFT" baseline

--data: problem files (code and math may be mixed), or a benchmark file with --data-benchmark NAME. --out: config.json,
metrics.jsonl, samples/step_*.jsonl and step_*/ checkpoints (Hugging Face layout, plus what --resume needs). The toy
world (the last section; --toy-world weak-tests, the default, or style-bias) keeps its artifacts in --out (default
runs/toy) and reuses them on a rerun; --toy-scale 0.05 is the CI size, --toy-task math the word-problem version.
File formats: README.md.
"""

import argparse
import functools
import inspect
import json
import math
import os
import queue
import random
import re
import sys
import threading
import time
from contextlib import contextmanager, nullcontext

from execute import default_workers, run_jobs, start_pool

if __name__ == "__main__":
    start_pool(default_workers())  # before torch and CUDA live in this process: the sandbox starts cheap, clean

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm
from transformers.cache_utils import DynamicCache

import reward
from reward import (begin_checkpoint, checkpoint_paths, commit_checkpoint, enable_grad_ckpt, latest_checkpoint,
                    lr_multiplier, pack_by_budget, resume_checkpoint, setup_distributed, shard_layers,
                    sweep_checkpoints, truncate_metrics)
from synth import (all_boxed, build_prompt, completion_target, encode_prompt, eos_token_ids, extract_code, fail,
                   fold_statuses, format_prompt, generate, load_model, load_problems, read_jsonl, score_math,
                   solution_from_output, split_reasoning, task_jobs)

# -----------------------------------------------------------------------------
# Config: one flat list of flags, printed at start and saved with every checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Model and data (no --model: the CPU toy world)
    p.add_argument("--model", help="policy to train: hub id or local directory")
    p.add_argument("--data", nargs="+", help="training problems (JSONL; see the docstring)")
    p.add_argument("--data-benchmark", help="read --data with synth.py's loader of this benchmark instead")
    p.add_argument("--out", help="run directory: metrics, samples, checkpoints (default: runs/grpo; runs/toy for "
                                 "the toy world)")
    p.add_argument("--algo", default="grpo", choices=["grpo", "sft"], help="sft: cross-entropy on the references")
    p.add_argument("--prompt-format", default="recode", choices=["recode", "instruct", "raw"],
                   help="recode: ReCode's system prompt + chat template; instruct: the benchmark's own prompt; "
                        "raw: the problem's prompt text as is (base models, tests)")
    # Reward
    p.add_argument("--reward", default="gated", choices=["gated", "ungated", "outcome"])
    p.add_argument("--reward-model", help="reward.py model directory (needed for gated and ungated)")
    p.add_argument("--proc-weight", type=float, default=1.0, help="weight w of R_proc")
    p.add_argument("--proc-all", action="store_true",
                   help="score every sample with the reward model, for the logs (gated: never enters the reward)")
    p.add_argument("--rm-batch-size", type=int, default=16)
    p.add_argument("--rm-device", default=None, help="device of the reward model (default: the policy's)")
    p.add_argument("--exec-timeout", type=float, default=3.0, help="seconds per test case")
    p.add_argument("--exec-memory-mb", type=int, default=2048)
    p.add_argument("--exec-workers", type=int, default=None, help="sandbox processes per rank (default: cores/ranks)")
    p.add_argument("--trust-in-process", action="store_true",
                   help="let passes of tests that ran in the program's own process (unittest with mocks, files, "
                        "DataFrames) give R_out = 1; by default they give NaN, like a harness failure")
    p.add_argument("--overlap-rewards", action="store_true",
                   help="run each completion's tests in the sandbox as soon as the engine finishes it, while the other "
                        "rows still decode (same rewards; less reward time after decoding)")
    p.add_argument("--overlong-buffer", type=int, default=0,
                   help="DAPO's soft overlong punishment: a reward penalty rising linearly over the last L tokens "
                        "before --max-new-tokens (0: off)")
    p.add_argument("--overlong-penalty", type=float, default=1.0,
                   help="the penalty at --max-new-tokens tokens (with --overlong-buffer)")
    # Rollout
    p.add_argument("--batch-size", type=int, default=128, help="completions per step over all ranks (sft: sequences)")
    p.add_argument("--group-size", type=int, default=8, help="G: completions per problem")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--gen-rows", type=int, default=0, help="most rows per generate() call per rank (0: all at once)")
    # Objective (TRL 1.16 GRPOConfig names: loss_type, scale_rewards, epsilon, epsilon_high, num_iterations, beta)
    p.add_argument("--loss-type", default="dapo", choices=["grpo", "bnpo", "dr_grpo", "dapo"])
    p.add_argument("--scale-rewards", default="group", choices=["group", "batch", "none"])
    p.add_argument("--epsilon", type=float, default=0.2, help="lower clip")
    p.add_argument("--epsilon-high", type=float, default=0.28, help="upper clip (clip-higher replaces the KL)")
    p.add_argument("--num-iterations", type=int, default=1, help="optimizer updates per batch of samples")
    p.add_argument("--beta", type=float, default=0.0, help="k3 KL coefficient; 0 loads no reference model")
    p.add_argument("--mask-truncated", action="store_true",
                   help="no loss on completions cut at --max-new-tokens (or by --finish-share)")
    p.add_argument("--finish-share", type=float, default=1.0,
                   help="end a generate() call's unfinished completions once this share of its rows has finished "
                        "(cut, without EOS: truncated; pair with --mask-truncated). Default 1: off")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="decode without CUDA graphs (the same tokens, slower; to rule them out when debugging)")
    p.add_argument("--rollout-is", choices=["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"],
                   help="correct the engine/trainer log-prob mismatch by importance sampling (TRL's "
                        "vllm_importance_sampling_mode): weight each token's loss by pi_train/pi_engine of the token "
                        "or of the whole sequence, truncated at --rollout-is-cap or masked (0) above it (default: off)")
    p.add_argument("--rollout-is-cap", type=float, default=3.0, help="cap C of --rollout-is (TRL's default 3)")
    p.add_argument("--dynamic-sampling", action="store_true",
                   help="DAPO: drop groups whose rewards are all equal (no gradient) and sample more groups until "
                        "the batch is full")
    p.add_argument("--dynamic-sampling-rounds", type=int, default=4,
                   help="most extra generation rounds per step with --dynamic-sampling; a batch still short after "
                        "them is filled with equal-reward groups")
    # Optimisation
    p.add_argument("--steps", type=int, default=200, help="batches of samples to train on")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "linear", "cosine"])
    p.add_argument("--warmup-steps", type=int, default=0, help="optimizer updates of linear warmup")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    p.add_argument("--seed", type=int, default=0)
    # Scale
    p.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"], help="fsdp: shard weights and optimizer")
    p.add_argument("--token-budget", type=int, default=16384, help="padded tokens per training micro-batch")
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None,
                   help="gradient checkpointing (default: on GPU, where it saves memory; off on CPU, where it only "
                        "costs a second forward)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="bf16: fp32 master weights, bf16 compute; auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--trust-remote-code", action="store_true")
    # Logging, checkpoints, evaluation
    p.add_argument("--save-every", type=int, default=50, help="steps between checkpoints (and one at the end)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--dump-every", type=int, default=10, help="steps between sample dumps (0: never)")
    p.add_argument("--eval-data", nargs="+", help="held-out problems, greedy pass@1 every --eval-every steps")
    p.add_argument("--eval-benchmark", help="read --eval-data with synth.py's loader of this benchmark")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-limit", type=int, default=0, help="first N held-out problems only (0: all)")
    p.add_argument("--wandb-project", help="also log to Weights & Biases (needs wandb installed)")
    p.add_argument("--toy-scale", type=float, default=1.0,
                   help="toy world (no --model): multiply its numbers of steps by this (tests use ~0.05)")
    p.add_argument("--toy-task", default="code", choices=["code", "math"],
                   help="toy world: synth.py's toy list functions (code) or toy arithmetic word problems (math)")
    p.add_argument("--toy-world", choices=["weak-tests", "style-bias"],
                   help="toy code world: weak training tests and a length-biased reward model (weak-tests, the "
                        "default), or perfect tests and a style-biased reward model (style-bias, the math world's)")
    args = p.parse_args(argv)
    if args.toy_task == "math" and args.toy_world == "weak-tests":
        p.error("--toy-world weak-tests: the toy math world has no tests to weaken; drop --toy-world")
    args.toy_world = args.toy_world or ("weak-tests" if args.toy_task == "code" else "style-bias")
    args.out = args.out or ("runs/grpo" if args.model else "runs/toy-math" if args.toy_task == "math"
                            else "runs/toy" if args.toy_world == "weak-tests" else "runs/toy-style-bias")
    return args


def check_config(args, world):
    """Every mistake we can see before loading a model, with the flag to change."""
    if not args.model:
        fail("--model is required")
    for path in (args.data or []) + (args.eval_data or []):
        if not os.path.exists(path):
            fail(f"data file {path} does not exist")
    if not args.data:
        fail("--data is required")
    if args.algo == "grpo":
        if args.group_size < 2:
            fail(f"--group-size {args.group_size}: GRPO needs at least 2 completions per problem to compare")
        if args.batch_size % args.group_size:
            fail(f"--batch-size {args.batch_size} is not divisible by --group-size {args.group_size}: "
                 f"a step samples batch/G problems with G completions each")
        if (args.batch_size // args.group_size) % world:
            fail(f"--batch-size {args.batch_size} / --group-size {args.group_size} = "
                 f"{args.batch_size // args.group_size} problems per step do not split over {world} ranks")
        if args.reward != "outcome":
            if not args.reward_model:
                fail(f"--reward {args.reward} needs --reward-model (a reward.py model directory); "
                     f"--reward outcome trains without one")
            if not os.path.exists(args.reward_model):
                fail(f"--reward-model {args.reward_model} does not exist")
    elif args.batch_size % world:
        fail(f"--batch-size {args.batch_size} does not split over {world} ranks")
    if args.temperature <= 0:
        fail("--temperature must be > 0: training log-probs are those of logits / temperature")
    if not 0 <= args.epsilon < 1 or args.epsilon_high < 0:
        fail(f"clip range --epsilon {args.epsilon} --epsilon-high {args.epsilon_high} is not 0 <= eps < 1")
    for name in ("num_iterations", "steps", "max_new_tokens", "token_budget", "keep", "rm_batch_size"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1")
    if args.beta < 0 or args.lr <= 0:
        fail("--beta must be >= 0 and --lr > 0")
    if args.parallel == "fsdp" and not dist.is_initialized():
        fail("--parallel fsdp shards over processes: launch with torchrun")
    if args.eval_every and not args.eval_data:
        fail("--eval-every needs --eval-data")
    if args.rollout_is_cap <= 0:
        fail(f"--rollout-is-cap {args.rollout_is_cap} must be > 0")
    if not 0 < args.finish_share <= 1:
        fail(f"--finish-share {args.finish_share} must be in (0, 1]")
    if not 0 <= args.overlong_buffer <= args.max_new_tokens or args.overlong_penalty < 0:
        fail(f"--overlong-buffer {args.overlong_buffer} must be in [0, --max-new-tokens {args.max_new_tokens}] "
             f"and --overlong-penalty {args.overlong_penalty} >= 0")
    if args.dynamic_sampling_rounds < 0:
        fail("--dynamic-sampling-rounds must be >= 0")
    has_checkpoint = os.path.isdir(args.out) and latest_checkpoint(args.out) is not None
    if args.resume and not has_checkpoint:
        fail(f"--resume: no complete checkpoint (step_*/trainer_state.pt) in {args.out}")
    if has_checkpoint and not args.resume:
        fail(f"{args.out} already holds checkpoints: pass --resume to continue, or choose another --out")


# -----------------------------------------------------------------------------
# Data: problems as synth.load_problems gives them (prompt, tests {group: spec}, code_prefix, code_prompt, task)


def prompt_text(args, tokenizer, problem):
    if args.prompt_format == "raw":
        return problem["prompt"]
    system, user = build_prompt(problem, args.prompt_format, problem.get("task", "code"))
    return format_prompt(tokenizer, user, system)


@functools.lru_cache(maxsize=4)
def epoch_order(n_problems, seed, epoch):
    return np.random.default_rng([seed, epoch]).permutation(n_problems).tolist()


def step_problems(n_problems, per_step, step, seed):
    """Problem indices of one step: an endless stream of seeded permutations, one per epoch. A function of the step
    alone, so a resumed run sees exactly the problems an uninterrupted run would have seen."""
    return [epoch_order(n_problems, seed, k // n_problems)[k % n_problems]
            for k in range(step * per_step, (step + 1) * per_step)]


# -----------------------------------------------------------------------------
# Rewards. A task type gives R_fmt (text -> 0/1) and R_out (problems, samples -> 1 pass, 0 fail, NaN when the
# verdict is unknown); R_proc and the gate are the same for every task. Add a task type by adding an entry.

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
STRUCTURE = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.S)
FENCED_BLOCK = re.compile(r"^[ \t]*```[ \t]*[\w+.-]*[ \t]*\n.*?^[ \t]*```[ \t]*$", re.S | re.M)


def answer_block(text):
    """The <answer> block's content when the output is exactly one <think> block (not empty), then one <answer>
    block, and nothing else but whitespace; else None."""
    match = STRUCTURE.fullmatch(text)
    if match and all(text.count(tag) == 1 for tag in TAGS) and match["think"].strip():
        return match["answer"]
    return None


def code_format_reward(text):
    """1.0 for ReCode's structure (answer_block) with a complete fenced code block in the answer; else 0.0."""
    answer = answer_block(text)
    return float(answer is not None and bool(FENCED_BLOCK.search(answer)))


def code_outcome_reward(args, problems, samples):
    """Strict: 1.0 only if the extracted code passes every test group; harness failures (ours, not the model's)
    give NaN, which TRL-style group statistics skip."""
    jobs = [job for i, (problem, sample) in enumerate(zip(problems, samples)) for job in code_jobs(problem, sample, i)]
    statuses = [[] for _ in samples]
    for result in run_code_jobs(args, jobs):
        statuses[result["id"][0]].append(result["status"])
    return [code_verdict(s) for s in statuses]


def code_jobs(problem, sample, index):
    """The sandbox jobs of one sample, one per test group, with ids (index, group); none without code (a fail)."""
    code = solution_from_output(problem, sample.text, "last_fence")
    return task_jobs(problem, code, job_id=index) if code.strip() else []


def run_code_jobs(args, jobs):
    results = run_jobs(jobs, workers=args.exec_workers, timeout=args.exec_timeout, memory_mb=args.exec_memory_mb,
                       fail_fast=True) if jobs else []
    for r in results:   # a pass decided next to the program's code is not evidence for R_out (execute.py "trust")
        if r["status"] == "passed" and r.get("trust") == "in-process" and not getattr(args, "trust_in_process", False):
            r["status"] = "harness_error"
    return results


def code_verdict(statuses):
    """R_out from the statuses of a sample's jobs: 1 passed, NaN when only the sandbox failed, else 0."""
    return {"passed": 1.0, "harness_error": math.nan}.get(fold_statuses(statuses), 0.0)


def math_format_reward(text):
    """1.0 for the same structure as code, with a complete, non-empty \\boxed{} in the answer; else 0.0."""
    answer = answer_block(text)
    return float(answer is not None and any(box.strip() for box in all_boxed(answer)))


def math_outcome_reward(args, problems, samples):
    """The benchmarks' own checker (synth.score_math), so a training reward and a benchmark score are the same
    verdict."""
    return [float(score_math(sample.text, problem["answer"])) for problem, sample in zip(problems, samples)]


# jobs and verdict (optional): the outcome split so that --overlap-rewards can run the jobs while decoding goes on
TASKS = {"code": dict(format=code_format_reward, outcome=code_outcome_reward, jobs=code_jobs, verdict=code_verdict),
         "math": dict(format=math_format_reward, outcome=math_outcome_reward)}


def combine_rewards(r_fmt, r_out, r_proc, mode, proc_weight):
    """Eq. 1 and its two baselines. r_proc is NaN where the reward model did not score; gated, a sample that did
    not pass gets no R_proc whatever its score."""
    if mode == "outcome":
        proc = np.zeros_like(r_proc)
    elif mode == "gated":
        proc = np.where(r_out == 1, np.nan_to_num(r_proc), 0.0)
    else:
        proc = np.nan_to_num(r_proc)
    return r_fmt + r_out + proc_weight * proc


def compute_rewards(args, problems, samples, reward_model, r_out=None):
    """Per sample R_fmt, R_out, R_proc (NaN where not scored), the overlong penalty R_len (with --overlong-buffer)
    and R. r_out: the outcomes when already known (--overlap-rewards computed them during decoding)."""
    n = len(samples)
    r_fmt, known, r_out = np.zeros(n), r_out is not None, np.zeros(n) if r_out is None else np.asarray(r_out, float)
    for task in {p["task"] for p in problems}:
        idx = [i for i in range(n) if problems[i]["task"] == task]
        r_fmt[idx] = [TASKS[task]["format"](samples[i].text) for i in idx]
        if not known:
            r_out[idx] = TASKS[task]["outcome"](args, [problems[i] for i in idx], [samples[i] for i in idx])
    r_proc = np.full(n, np.nan)
    if args.reward != "outcome":
        scored = [i for i in range(n) if args.reward == "ungated" or args.proc_all or r_out[i] == 1]
        if scored:
            reasonings = [split_reasoning(samples[i].text)[0] for i in scored]
            r_proc[scored] = reward.score(reward_model[0], reward_model[1], [problems[i]["prompt"] for i in scored],
                                          [r if r is not None else samples[i].text for r, i in zip(reasonings, scored)],
                                          codes=[extract_code(samples[i].text) if problems[i]["task"] == "code" else None
                                                 for i in scored],
                                          batch_size=args.rm_batch_size)
    parts = dict(r_fmt=r_fmt, r_out=r_out, r_proc=r_proc,
                 reward=combine_rewards(r_fmt, r_out, r_proc, args.reward, args.proc_weight))
    if args.overlong_buffer:
        parts["r_len"] = overlong_penalty([len(s.token_ids) for s in samples], args.max_new_tokens,
                                          args.overlong_buffer, args.overlong_penalty)
        parts["reward"] = parts["reward"] + parts["r_len"]
    return parts


def overlong_penalty(lengths, max_new_tokens, buffer, penalty):
    """DAPO's soft overlong punishment (Eq. 13) times `penalty`: 0 up to max_new_tokens - buffer tokens, then
    falling linearly to -penalty at max_new_tokens (and -penalty beyond, which the engine never produces). Lengths
    count the EOS token, as the trained tokens do."""
    exceed = (np.asarray(lengths, dtype=float) - (max_new_tokens - buffer)) / buffer
    return -penalty * np.clip(exceed, 0.0, 1.0)


# -----------------------------------------------------------------------------
# The objective, exactly TRL 1.16's (grpo_trainer.py: _generate_and_score_completions, _compute_loss)


def nanstd(x, dim=None):
    """Bessel-corrected standard deviation ignoring NaN (TRL's nanstd)."""
    mean = x.nanmean(dim=dim, keepdim=True) if dim is not None else x.nanmean()
    count = (~x.isnan()).sum(dim=dim) if dim is not None else (~x.isnan()).sum()
    variance = ((x - mean) ** 2).nanmean(dim=dim) * count / (count - 1)
    return variance.sqrt()


def group_advantages(rewards, group_size, scale="group"):
    """A = (R - group mean) / (std + 1e-4), std over the group ('group') or the whole batch ('batch'); 'none'
    only centres (Dr. GRPO). rewards: all ranks' rewards, groups contiguous. NaN rewards are skipped in the
    statistics and get A = 0. Returns (A, zero_std) with zero_std True where a sample's group has equal rewards."""
    grouped = rewards.view(-1, group_size)
    group_std = nanstd(grouped, dim=1)[:, None].expand_as(grouped)
    advantages = grouped - grouped.nanmean(dim=1, keepdim=True)
    if scale != "none":
        std = group_std if scale == "group" else nanstd(rewards)
        advantages = advantages / (std + 1e-4)
    zero_std = torch.isclose(group_std, torch.zeros_like(group_std))
    return advantages.nan_to_num(0.0).flatten(), zero_std.flatten()


def completion_length(token_ids, eos_ids):
    """Tokens trained of a completion: up to and including the first EOS, nothing after it (TRL's mask)."""
    return next((k + 1 for k, t in enumerate(token_ids) if t in eos_ids), len(token_ids))


def sequence_weights(loss_type, n_tokens, n_sequences, total_tokens, max_new_tokens):
    """Weight w_i of each trained token of sequence i: the step's loss is sum_i sum_t w_i * l_it. With these weights
    one optimizer step over the whole batch equals TRL's loss for any split into equal micro-batches and ranks
    (TRL divides grpo/bnpo/dr_grpo by gradient accumulation steps, dapo by tokens per rank, DDP averages over
    ranks), and any split we make for memory changes nothing. n_tokens: this rank's sequences; n_sequences and
    total_tokens: the whole step over all ranks. bnpo's normaliser is the batch's tokens: TRL's value with one
    micro-batch on one rank; TRL with several averages per-micro-batch token means, which depends on the split."""
    if loss_type == "grpo":  # mean over sequences of the per-sequence token mean
        return [1.0 / (max(1, n) * n_sequences) for n in n_tokens]
    if loss_type == "dr_grpo":  # token sum over a constant: sequences x max completion length
        return [1.0 / (n_sequences * max_new_tokens)] * len(n_tokens)
    return [1.0 / max(1, total_tokens)] * len(n_tokens)  # dapo, bnpo: mean over every token of the step


def per_token_loss(logps, old_logps, ref_logps, advantages, epsilon_low, epsilon_high, beta, is_weights=None):
    """-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), r = exp(logp - logp_old), times the rollout correction
    is_weights (--rollout-is; TRL applies it to this term, not to the KL), plus beta * r * k3 KL to the reference
    (TRL 1.16's use_bias_correction_kl, on by default). Returns (loss, ratio, kl or None)."""
    ratio = torch.exp(logps - old_logps)
    clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    if is_weights is not None:
        loss = loss * is_weights
    kl = None
    if beta:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl * ratio
    return loss, ratio, kl


# -----------------------------------------------------------------------------
# The training loop


def train(args):
    rank, world, device = start_run(args)
    master = rank == 0
    print0 = print if master else (lambda *a, **k: None)
    problems = load_problems(args.data, args.data_benchmark, need_reference=args.algo == "sft", tasks=TASKS)
    eval_problems = load_problems(args.eval_data, args.eval_benchmark, tasks=TASKS) if args.eval_data else []
    if args.eval_limit:
        eval_problems = eval_problems[:args.eval_limit]
    resume_from = resume_checkpoint(args.out, rank) if args.resume else None
    torch.manual_seed(args.seed)
    module, policy, tokenizer = build_policy(args, resume_from or args.model, device, world)
    ref_policy = build_policy(args, args.model, device, world, trainable=False)[0] if args.beta else None
    reward_model = None
    if args.algo == "grpo" and args.reward != "outcome":
        reward_model = reward.load_reward_model(args.reward_model, device=args.rm_device or device)
    eos_ids = set(eos_token_ids(policy.lm, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    sft_eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else min(eos_ids)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
        lambda update: lr_multiplier(args.lr_schedule, update, args.steps * args.num_iterations, args.warmup_steps))
    start_step = load_trainer_state(args, resume_from, optimizer, scheduler, rank, world) if resume_from else 0
    print0(f"{len(problems)} training problems, {world} rank(s), {args.parallel}, {args.precision}, "
           f"starting at step {start_step}" + (f" (resumed from {resume_from})" if resume_from else ""))

    log = MetricsLog(args, start_step, enabled=master)

    if eval_problems and args.eval_every and start_step == 0:
        log(0, evaluate_policy(args, policy, tokenizer, eval_problems, rank, world, device))

    G = args.group_size if args.algo == "grpo" else 1
    per_rank = args.batch_size // G // world  # problems per rank per step
    truncation = TruncationWatch()
    bar = tqdm(range(start_step, args.steps), initial=start_step, total=args.steps, disable=not master,
               desc=args.algo, dynamic_ncols=True)
    for step in bar:
        t_start = time.perf_counter()
        indices = step_problems(len(problems), args.batch_size // G, step, args.seed)
        local = [problems[i] for i in indices[rank * per_rank:(rank + 1) * per_rank]]
        if args.algo == "sft":
            seqs, metrics = sft_sequences(args, tokenizer, local, sft_eos), {}
            gen_time = reward_time = 0.0
        else:
            seqs, metrics, gen_time, reward_time = grpo_batch(args, policy, tokenizer, problems, local, step, rank,
                                                              world, device, reward_model, eos_ids, pad_id)
        t_scored = time.perf_counter()
        n_sequences, total_tokens = all_sum([len(seqs), sum(s["n_tokens"] for s in seqs)], device)
        loss_type = "dapo" if args.algo == "sft" else args.loss_type  # SFT: the token mean over the batch
        weights = sequence_weights(loss_type, [s["n_tokens"] for s in seqs], n_sequences, total_tokens,
                                   args.max_new_tokens)
        for s, w in zip(seqs, weights):
            s["weight"] = w if s["n_tokens"] else 0.0
        stats, grad_norm = optimize(args, module, policy, ref_policy, optimizer, scheduler, seqs, pad_id, device,
                                    world)
        t_end = time.perf_counter()
        totals = all_reduce_stats(stats, device)
        tokens = max(1.0, totals["tokens"])
        step_time = t_end - t_start
        metrics.update(loss=totals["loss"], entropy=totals["entropy"] / tokens, grad_norm=grad_norm,
                       lr=scheduler.get_last_lr()[0], trained_tokens=int(totals["tokens"] / args.num_iterations),
                       tokens_per_s=total_tokens / step_time, step_time=step_time, gen_time=gen_time,
                       reward_time=reward_time, train_time=t_end - t_scored, **update_metrics(args, totals, device))
        if args.algo == "grpo":
            warning = truncation.update(metrics["clipped_ratio"], args.max_new_tokens)
            if warning and master:
                print(warning, file=sys.stderr, flush=True)
            bar.set_postfix(reward=f"{metrics['reward'] or 0:.3f}", pass_rate=f"{metrics['pass_rate'] or 0:.2f}",
                            len=f"{metrics['completion_len']:.0f}", s=f"{step_time:.1f}")
        else:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", s=f"{step_time:.1f}")
        done = step + 1
        if eval_problems and args.eval_every and (done % args.eval_every == 0 or done == args.steps):
            metrics.update(evaluate_policy(args, policy, tokenizer, eval_problems, rank, world, device))
        log(done, metrics)
        if (args.save_every and done % args.save_every == 0) or done == args.steps:
            save_checkpoint(args, policy, tokenizer, optimizer, scheduler, done, rank, world)
    bar.close()
    log.close()
    return policy


# -----------------------------------------------------------------------------
# The machinery train() calls: the run's start and its metrics log, a GRPO step's batch, log-probs (a chunked head),
# micro-batches, distributed, checkpoints, batches, the optimizer step


def start_run(args):
    """Join the process group, fill in the defaults that depend on the device, check the flags, print the config and
    save it; sweep what a crashed save left in --out. Returns (rank, world, device)."""
    rank, world, device = setup_distributed()
    if args.exec_workers is None:
        args.exec_workers = default_workers()
    if args.precision == "auto":
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    if args.grad_ckpt is None:
        args.grad_ckpt = device.type == "cuda"
    check_config(args, world)
    if rank == 0:
        print(json.dumps(vars(args), indent=1))
    os.makedirs(args.out, exist_ok=True)
    barrier()
    if rank == 0:
        sweep_checkpoints(args.out)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
    return rank, world, device


class MetricsLog:
    """metrics.jsonl, and wandb with --wandb-project; written by rank 0 only (enabled). A resumed run first drops
    the lines of the steps it will redo, so the file holds each step once."""

    def __init__(self, args, start_step, enabled=True):
        self.path = os.path.join(args.out, "metrics.jsonl")
        self.enabled = enabled
        self.wandb_run = None
        if not enabled:
            return
        if os.path.exists(self.path):
            truncate_metrics(self.path, start_step)
        if args.wandb_project:
            try:
                import wandb
            except ImportError:
                fail("--wandb-project needs wandb: pip install wandb")
            self.wandb_run = wandb.init(project=args.wandb_project, name=os.path.basename(os.path.abspath(args.out)),
                                        config=vars(args), resume="allow")

    def __call__(self, step, metrics):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(step=step, **metrics)) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def close(self):
        if self.wandb_run is not None:
            self.wandb_run.finish()


def grpo_batch(args, policy, tokenizer, problems, local, step, rank, world, device, reward_model, eos_ids, pad_id):
    """Sample G completions of each of this rank's problems (or, with --dynamic-sampling, of as many as it takes),
    score them, and turn them into training sequences with their advantages. Returns (sequences, metrics,
    generation seconds, reward seconds)."""
    seed = (args.seed * 1_000_003 + step) * 4096 + rank  # a fresh, reproducible stream per step and rank
    if args.dynamic_sampling:
        samples, sample_problems, parts, gen_time, reward_time, sampling_metrics = dynamic_sampling(
            args, policy, tokenizer, problems, step, seed, rank, world, device, reward_model)
    else:
        samples, sample_problems, parts, gen_time, reward_time = sample_and_score(
            args, policy, tokenizer, local, args.group_size, seed, reward_model)
        sampling_metrics = {}
    seqs, metrics = grpo_sequences(args, samples, parts, eos_ids, pad_id, rank, device)
    metrics.update(sampling_metrics)
    if args.dump_every and step % args.dump_every == 0:
        dump_samples(args, step, sample_problems, samples, parts, seqs, rank)
    return seqs, metrics, gen_time, reward_time


def update_metrics(args, totals, device):
    """The optimizer side of a step's metrics: clipping, the rollout/training mismatch, KL, and (CUDA) this rank's
    peak memory in the step, what sizing --batch-size and --token-budget needs."""
    tokens = max(1.0, totals["tokens"])
    metrics = {}
    if device.type == "cuda":
        metrics["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    if args.algo == "grpo":
        metrics.update(clip_low=totals["clip_low"] / tokens, clip_high=totals["clip_high"] / tokens,
                       clip_region=totals["clip_region"] / tokens, **mismatch_metrics(args, totals))
        if args.beta:
            metrics["kl"] = totals["kl"] / tokens
    return metrics


def rollout_is_weights(train_logps, engine_logps, sequence_index, mode, cap):
    """TRL's vllm_importance_sampling_mode on our flat tokens: the ratio pi_train / pi_engine of the sampled tokens,
    per token (token_*) or per sequence, the product over its tokens (sequence_*); truncated at cap or set to 0
    above it (mask). sequence_index: each token's sequence in the micro-batch. No gradient flows through it."""
    log_ratio = (train_logps - engine_logps).detach()
    if mode.startswith("sequence"):
        per_sequence = torch.zeros(int(sequence_index.max()) + 1 if len(sequence_index) else 0,
                                   dtype=log_ratio.dtype, device=log_ratio.device)
        log_ratio = per_sequence.index_add_(0, sequence_index, log_ratio)[sequence_index]
    ratio = torch.exp(log_ratio)
    return ratio.clamp(max=cap) if mode.endswith("truncate") else ratio.masked_fill(ratio > cap, 0.0)


def engine_logprobs(seqs, device):
    """The engine's log-probs of the targets of collate(seqs) (same order) and each target's sequence index; None
    for an empty micro-batch (collate's dummy row is never trained)."""
    if not seqs:
        return None
    values = [v for s in seqs for v in s["engine_logps"]]
    index = [k for k, s in enumerate(seqs) for _ in s["engine_logps"]]
    return (torch.tensor(values, dtype=torch.float32, device=device),
            torch.tensor(index, dtype=torch.long, device=device))


LOGITS_PER_CHUNK = 1 << 27  # logits (tokens x vocab) materialised at once: 512 MiB in fp32


class TargetLogprobs(torch.autograd.Function):
    """Row by row: log softmax(logits)[target], and the entropy of softmax(logits) (a metric, no gradient: TRL's
    default). Three passes over the logits forward and one backward, where autograd through logsumexp, gather and
    softmax makes about ten; the backward keeps only the softmax, in place of the logits."""

    @staticmethod
    def forward(ctx, logits, targets):
        logps = logits.log_softmax(-1)
        target_logps = logps.gather(-1, targets[:, None]).squeeze(-1)
        probs = logps.exp()
        entropy = -logps.mul_(probs).sum(-1)
        ctx.save_for_backward(probs, targets)
        ctx.mark_non_differentiable(entropy)
        return target_logps, entropy

    @staticmethod
    def backward(ctx, grad, _):
        probs, targets = ctx.saved_tensors  # d log p_target / d logit_j = 1[j = target] - p_j
        grad_logits = probs * -grad[:, None]
        return grad_logits.scatter_add_(-1, targets[:, None], grad[:, None]), None


def chunk_logprobs(lm_head, hidden, targets, temperature):
    logits = lm_head(hidden).float()
    if temperature != 1:  # dividing by 1 only costs a pass over the logits
        logits = logits / temperature
    return TargetLogprobs.apply(logits, targets)


class Policy(nn.Module):
    """The causal LM plus what training reads from it: log p(target | prefix) / T at chosen positions, and the
    entropy there. Wrapping the LM puts this whole computation inside the module DDP and FSDP hook into."""

    def __init__(self, lm, temperature):
        super().__init__()
        self.lm = lm
        self.temperature = temperature
        self.cache_arg = "cache" if "cache" in inspect.signature(lm.base_model.forward).parameters \
            else "past_key_values"  # transformers renamed it in 5.x

    def forward(self, input_ids, positions, targets, prompt_ids=None, prompt_of_row=None, position_ids=None,
                attention_mask=None):
        """Without prompt_ids: input_ids are whole sequences, right-padded (under a causal mask no real token sees
        a pad, so no attention mask is needed). With them: each distinct prompt is a row of prompt_ids, run once;
        its keys and values are copied to the rows of input_ids (completions) whose prompt it is, so the G samples
        of a group share one prompt forward, and the gradient reaches the prompt through the copies. positions
        index the hidden states of all rows, flattened (prompt rows first)."""
        base = self.lm.base_model
        if prompt_ids is None:
            hidden = base(input_ids=input_ids, use_cache=False).last_hidden_state.flatten(0, 1)
        else:
            cache = DynamicCache(config=self.lm.config)
            prompt_hidden = base(input_ids=prompt_ids, use_cache=True, **{self.cache_arg: cache}).last_hidden_state
            cache.batch_select_indices(prompt_of_row)
            hidden = base(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                          use_cache=True, **{self.cache_arg: cache}).last_hidden_state
            hidden = torch.cat([prompt_hidden.flatten(0, 1), hidden.flatten(0, 1)])
        hidden = hidden[positions]
        head = self.lm.get_output_embeddings()
        chunk = max(1, LOGITS_PER_CHUNK // head.weight.shape[0])
        # The full (tokens x vocab) log-softmax never exists: chunks of logits, and with several chunks each is
        # recomputed in backward instead of being kept (for a 152K vocabulary, 5 GB per 8K tokens in fp32).
        recompute = torch.is_grad_enabled() and len(targets) > chunk
        pieces = [checkpoint(chunk_logprobs, head, hidden[s:s + chunk], targets[s:s + chunk], self.temperature,
                             use_reentrant=False) if recompute else
                  chunk_logprobs(head, hidden[s:s + chunk], targets[s:s + chunk], self.temperature)
                  for s in range(0, len(targets), chunk)]
        return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])


# -----------------------------------------------------------------------------
# Micro-batches


def micro_batches(lengths, token_budget):
    """Sequence indices grouped so that rows x longest row <= token_budget (a longer sequence goes alone); longest
    first, so that padding is small and an out-of-memory shows up at the first micro-batch."""
    return pack_by_budget(sorted(range(len(lengths)), key=lambda i: -lengths[i]), [[n] for n in lengths], token_budget)


def collate(seqs, pad_id, device, share_prompts=False):
    """seqs: dicts with ids (prompt + completion), n_prompt, and per-token fields. Returns Policy.forward's keyword
    arguments (share_prompts: one prompt forward per distinct prompt, where some prompt has several samples) and the
    flat per-token advantages and weights, in the order of the targets. A sequence's last token is only a target."""
    if not seqs:  # a rank with nothing to train still runs a forward/backward, so the collectives match up
        seqs = [dict(ids=[pad_id, pad_id], n_prompt=1, weight=0.0, advantage=0.0)]
    pad = lambda ids, width: ids + [pad_id] * (width - len(ids))
    tensor = lambda x, dtype=torch.long: torch.tensor(x, dtype=dtype, device=device)
    targets = [t for s in seqs for t in s["ids"][s["n_prompt"]:]]
    per_token = lambda key: tensor([v for s in seqs for v in [s[key]] * (len(s["ids"]) - s["n_prompt"])],
                                   torch.float32)
    prompt_row = {}
    for s in seqs:
        prompt_row.setdefault(tuple(s["ids"][:s["n_prompt"]]), len(prompt_row))
    if not share_prompts or len(prompt_row) == len(seqs):
        width = max(len(s["ids"]) for s in seqs) - 1
        positions = [row * width + k for row, s in enumerate(seqs) for k in range(s["n_prompt"] - 1, len(s["ids"]) - 1)]
        inputs = dict(input_ids=tensor([pad(s["ids"][:-1], width) for s in seqs]), positions=tensor(positions),
                      targets=tensor(targets))
        return inputs, per_token("advantage"), per_token("weight")
    prompt_of_row = [prompt_row[tuple(s["ids"][:s["n_prompt"]])] for s in seqs]
    prompt_width = max(len(p) for p in prompt_row)
    width = max(1, max(len(s["ids"]) - s["n_prompt"] for s in seqs) - 1)
    first = len(prompt_row) * prompt_width  # where the completion rows start in the flattened hidden states
    # the first target is predicted from the prompt's last token, the others from the completion's own tokens
    positions = [i for row, (s, p) in enumerate(zip(seqs, prompt_of_row))
                 for i in [p * prompt_width + s["n_prompt"] - 1] +
                 [first + row * width + k for k in range(len(s["ids"]) - s["n_prompt"] - 1)]]
    inputs = dict(input_ids=tensor([pad(s["ids"][s["n_prompt"]:-1], width) for s in seqs]),
                  positions=tensor(positions), targets=tensor(targets),
                  prompt_ids=tensor([pad(list(p), prompt_width) for p in prompt_row]),
                  prompt_of_row=tensor(prompt_of_row),
                  position_ids=tensor([list(range(s["n_prompt"], s["n_prompt"] + width)) for s in seqs]))
    if any(len(p) < prompt_width for p in prompt_row):  # right-padded prompts: no completion may attend to a pad
        inputs["attention_mask"] = tensor([[k < s["n_prompt"] for k in range(prompt_width)] + [True] * width
                                           for s in seqs], torch.bool)
    return inputs, per_token("advantage"), per_token("weight")


# -----------------------------------------------------------------------------
# Distributed setup, model, optimizer


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_gather_rows(x):
    """Concatenate every rank's tensor along dim 0 (equal shapes on every rank)."""
    if not dist.is_initialized():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return torch.cat(out)


def all_gather_objects(obj):
    """Every rank's picklable object, in rank order."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(values, device, op=None):
    """Sum (or op, a dist.ReduceOp) a list of floats over ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, **({"op": op} if op is not None else {}))
    return t.tolist()


def all_reduce_stats(stats, device):
    """optimize()'s statistics over ranks: maxima (MISMATCH_MAXES) by max, the rest summed."""
    maxima = [k for k in stats if k in MISMATCH_MAXES]
    sums = [k for k in stats if k not in MISMATCH_MAXES]
    totals = dict(zip(sums, all_sum([stats[k] for k in sums], device)))
    return totals | dict(zip(maxima, all_sum([stats[k] for k in maxima], device, dist.ReduceOp.MAX) if maxima else []))


def build_policy(args, path, device, world, trainable=True):
    """Load, wrap (FSDP2 per decoder layer + root, or DDP) and return (module to call, Policy, tokenizer)."""
    sharded = args.parallel == "fsdp"
    # fp32 master weights: bf16 Adam updates at lr 1e-6 round to nothing. A frozen reference model can be bf16.
    dtype = torch.bfloat16 if not trainable and args.precision == "bf16" else torch.float32
    lm, tokenizer = load_model(path, dtype=dtype, device="cpu" if sharded else device,
                               trust_remote_code=args.trust_remote_code)
    lm.config.use_cache = False
    if trainable and args.grad_ckpt:
        enable_grad_ckpt(lm)
        # transformers also hooks the embeddings so their output requires grad, which only adapters under reentrant
        # checkpointing need (here every weight is trained); the hook would also keep generate() off its fast step
        getattr(lm, "disable_input_require_grads", lambda: None)()
    policy = Policy(lm, args.temperature)
    policy.train(trainable)
    policy.requires_grad_(trainable)
    module = policy
    if sharded:
        from torch.distributed.fsdp import MixedPrecisionPolicy
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if args.precision == "bf16" and trainable else MixedPrecisionPolicy()
        if not getattr(lm, "_no_split_modules", None):
            fail(f"{path}: cannot find decoder layers to shard ({type(lm).__name__} lists no _no_split_modules)")
        shard_layers(policy, lm, mp)
        policy.to(device)
        with torch.no_grad():  # the first forward through the root makes it FSDP's root before decoding calls lm
            policy(torch.zeros((1, 2), dtype=torch.long, device=device), torch.tensor([0], device=device),
                   torch.tensor([0], device=device))
        policy.reshard()  # the root keeps its gathered weights after a forward; the optimizer must see the shards
    elif world > 1 and trainable:
        # buffers (rotary tables) never change: broadcasting them at every forward would only add collectives
        module = nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    return module, policy, tokenizer


@contextmanager
def decoding(policy, sharded):
    """FSDP: gather the whole model once for a generate() call instead of once per decoded token."""
    if not sharded:
        yield
        return
    from torch.distributed.fsdp import FSDPModule
    fsdp_modules = [m for m in policy.modules() if isinstance(m, FSDPModule)]
    for m in fsdp_modules:
        if m is not policy:
            m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in fsdp_modules:
            m.reshard()
            if m is not policy:
                m.set_reshard_after_forward(True, recurse=False)


def set_grad_sync(module, on):
    """Reduce gradients over ranks only in the last micro-batch's backward."""
    if isinstance(module, nn.parallel.DistributedDataParallel):
        module.require_backward_grad_sync = on
    elif hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(on)


# -----------------------------------------------------------------------------
# Checkpoints: HF model + tokenizer, optimizer, scheduler, RNG, step; written to a temporary directory and renamed


def save_checkpoint(args, policy, tokenizer, optimizer, scheduler, step, rank, world):
    sharded = args.parallel == "fsdp"
    tmp, final = begin_checkpoint(args.out, step) if rank == 0 else checkpoint_paths(args.out, step)
    state = None
    if sharded:  # a collective: every rank takes part, rank 0 receives the full weights on CPU
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        state = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        state = {k.removeprefix("lm."): v for k, v in state.items()}
        first_name = {}
        for name, param in policy.lm.named_parameters(remove_duplicate=False):
            if id(param) in first_name:  # tied (lm_head = embeddings): the gathered copies no longer share memory
                state.pop(name, None)
            first_name.setdefault(id(param), name)
    rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
               cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    rngs = all_gather_objects(rng)
    if rank == 0:
        policy.lm.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
    barrier()
    if sharded:  # each rank's shard of the optimizer: no gather, resumed on the same number of ranks
        torch.save(optimizer.state_dict(), os.path.join(tmp, f"optimizer_rank{rank}.pt"))
    elif rank == 0:
        torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
    barrier()
    if rank == 0:
        # trainer_state.pt is written last: a directory without it is never resumed from
        torch.save(dict(step=step, scheduler=scheduler.state_dict(), rng=rngs, world=world, config=vars(args)),
                   os.path.join(tmp, "trainer_state.pt"))
        with open(os.path.join(tmp, "run_config.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
        commit_checkpoint(tmp, final, args.out, args.keep)
    barrier()


def load_trainer_state(args, checkpoint_dir, optimizer, scheduler, rank, world):
    state = torch.load(os.path.join(checkpoint_dir, "trainer_state.pt"), weights_only=False)
    if args.parallel == "fsdp":
        if state["world"] != world:
            fail(f"{checkpoint_dir} holds optimizer shards of {state['world']} ranks; resume FSDP on {state['world']}")
        optimizer_file = f"optimizer_rank{rank}.pt"
    else:
        optimizer_file = "optimizer.pt"
    path = os.path.join(checkpoint_dir, optimizer_file)
    if not os.path.isfile(path):
        fail(f"{path} is missing (was the checkpoint written with another --parallel?)")
    optimizer.load_state_dict(torch.load(path, weights_only=False))
    scheduler.load_state_dict(state["scheduler"])
    if state["world"] == world:
        rng = state["rng"][rank]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    changed = {k: (v, getattr(args, k, None)) for k, v in state["config"].items()
               if k not in ("resume", "steps", "eval_every", "save_every", "dump_every", "keep", "wandb_project")
               and getattr(args, k, None) != v}
    if changed and rank == 0:
        print(f"warning: resuming with a changed config (saved, now): {changed}", file=sys.stderr)
    return state["step"]


# -----------------------------------------------------------------------------
# Sampling and evaluation


@torch.no_grad()
def rollout(args, policy, tokenizer, problems, n, seed, temperature=None, on_finish=None, finish_share=1.0):
    """n completions per problem, prompt-major, from the current weights. on_finish(index, sample): the engine's
    callback as each completion finishes (index into the returned list); finish_share: generate()'s."""
    prompts = [prompt_text(args, tokenizer, p) for p in problems]
    per_call = max(1, args.gen_rows // n) if args.gen_rows else len(prompts)
    samples = []
    with decoding(policy, args.parallel == "fsdp"), autocast(args, policy):
        for start in range(0, len(prompts), per_call):
            chunk = generate(policy.lm, tokenizer, prompts[start:start + per_call], n=n,
                             max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature if temperature is None else temperature,
                             top_p=args.top_p, top_k=args.top_k, seed=seed + start, finish_share=finish_share,
                             cuda_graphs=not args.no_cuda_graphs,
                             **({} if on_finish is None else
                                {"on_finish": lambda row, sample, first=start * n: on_finish(first + row, sample)}))
            for s in chunk:
                s.prompt_index += start
            samples += chunk
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the KV cache is garbage now: give its memory back before the training forwards
    return samples


def sample_and_score(args, policy, tokenizer, problems, n, seed, reward_model):
    """n samples per problem and their rewards: (samples, each sample's problem, compute_rewards' parts, seconds of
    decoding, seconds of rewards after decoding, the part of the step that waits for them)."""
    t_start = time.perf_counter()
    sample_problems = [p for p in problems for _ in range(n)]
    stream = RewardStream(args, sample_problems) if args.overlap_rewards else None
    samples = rollout(args, policy, tokenizer, problems, n, seed, on_finish=stream.add if stream else None,
                      finish_share=args.finish_share)
    t_generated = time.perf_counter()
    parts = compute_rewards(args, sample_problems, samples, reward_model, stream.outcomes(samples) if stream else None)
    return samples, sample_problems, parts, t_generated - t_start, time.perf_counter() - t_generated


class RewardStream:
    """--overlap-rewards: a rollout's outcomes, computed while it decodes. The engine hands each row to add() as it
    finishes; a worker thread sends whatever finished since its last call to execute.py's sandbox in one run_jobs
    call, so that by the end of decoding most verdicts are in, and outcomes() waits for the rest. The jobs and the
    verdicts are code_outcome_reward's, so the rewards are the same whatever order the rows finish in. Tasks
    without jobs (math's checker is quick) are scored after decoding. The reward model still scores after
    decoding: on the policy's GPU, or on the CPU cores the sandbox uses, it would slow decoding down."""

    def __init__(self, args, problems):
        self.args, self.problems = args, problems
        self.queue, self.reported, self.statuses, self.error = queue.Queue(), set(), {}, None
        self.thread = threading.Thread(target=self.work, daemon=True)
        self.thread.start()

    def add(self, index, sample):
        self.reported.add(index)
        if "jobs" in TASKS[self.problems[index]["task"]]:
            self.queue.put((index, sample))

    def work(self):
        finished = False
        while not finished:
            batch = [self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            finished = None in batch
            batch = [item for item in batch if item is not None]
            if self.error is not None or not batch:
                continue
            try:
                jobs = []
                for index, sample in batch:
                    self.statuses[index] = []
                    jobs += TASKS[self.problems[index]["task"]]["jobs"](self.problems[index], sample, index)
                for result in run_code_jobs(self.args, jobs):
                    self.statuses[result["id"][0]].append(result["status"])
            except BaseException as e:  # raised in the training thread, by outcomes()
                self.error = e

    def outcomes(self, samples):
        """R_out of every sample (in order), once the sandbox is done."""
        for index, sample in enumerate(samples):  # rows no engine call reported (a generate() without on_finish)
            if index not in self.reported:
                self.add(index, sample)
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        r_out = np.zeros(len(samples))
        for task in {p["task"] for p in self.problems}:
            idx = [i for i, p in enumerate(self.problems) if p["task"] == task]
            if "jobs" in TASKS[task]:
                r_out[idx] = [TASKS[task]["verdict"](self.statuses[i]) for i in idx]
            else:
                r_out[idx] = TASKS[task]["outcome"](self.args, [self.problems[i] for i in idx],
                                                    [samples[i] for i in idx])
        return r_out


def dynamic_sampling(args, policy, tokenizer, problems, step, seed, rank, world, device, reward_model):
    """--dynamic-sampling (DAPO): the step's groups whose rewards are all equal (no gradient) are dropped, and
    more groups are sampled, as DAPO takes further prompts from its data loader: problems not yet drawn in this
    step, in an order seeded by (seed, step, round) so that a resumed run draws the same ones, then drawn ones
    again once none is left. That goes on until batch/G groups with spread are found or --dynamic-sampling-rounds
    extra rounds are spent; a batch still short is filled with equal-reward groups, in the order they came. Every
    decision is taken on all ranks' rewards, so the ranks run the same rounds. The batch is then dealt to the ranks
    as a plain step's is, so that everything after sampling is unchanged. Returns sample_and_score's values for
    this rank's share, and metrics: frac_reward_zero_std* over every group sampled, before filtering."""
    G, per_step = args.group_size, args.batch_size // args.group_size
    per_rank = per_step // world
    spread, equal, mine, tables = [], [], {}, []  # group keys (round, rank, index), in the order generated
    drawn_in_step, gen_time, reward_time = [], 0.0, 0.0  # problem indices of every rank, every round
    for extra in range(args.dynamic_sampling_rounds + 1):
        if extra == 0:
            count = per_rank
            drawn = step_problems(len(problems), per_step, step, args.seed)
        else:  # about as many groups as the share with spread so far says are needed, at most a full batch
            keep_rate = len(spread) / (len(spread) + len(equal))
            count = per_rank if not spread else min(per_rank, math.ceil((per_step - len(spread)) / keep_rate / world))
            rng = np.random.default_rng([args.seed, step, extra])
            fresh = np.setdiff1d(np.arange(len(problems)), drawn_in_step)
            stream = fresh[rng.permutation(len(fresh))].tolist()
            while len(stream) < count * world:
                stream += rng.permutation(len(problems)).tolist()
            drawn = stream[:count * world]
        drawn_in_step += drawn
        indices = drawn[rank * count:(rank + 1) * count]
        samples, _, parts, t_gen, t_reward = sample_and_score(args, policy, tokenizer, [problems[i] for i in indices],
                                                              G, seed + (extra << 40), reward_model)
        gen_time, reward_time = gen_time + t_gen, reward_time + t_reward
        table = all_gather_rows(torch.tensor(np.stack([parts["reward"], parts["r_fmt"], parts["r_out"]], 1),
                                             dtype=torch.float64, device=device)).cpu()
        tables.append(table)
        zero_std = group_advantages(table[:, 0], G)[1].view(-1, G)[:, 0].tolist()
        for g, flat in enumerate(zero_std):
            (equal if flat else spread).append((extra, g // count, g % count))
        for g, problem_index in enumerate(indices):
            mine[(extra, rank, g)] = (problem_index, samples[g * G:(g + 1) * G],
                                      {k: v[g * G:(g + 1) * G] for k, v in parts.items()})
        if len(spread) >= per_step:
            break
    chosen = sorted(spread[:per_step] + equal[:max(0, per_step - len(spread))])
    groups = {}
    for shared in all_gather_objects({key: mine[key] for key in chosen if key in mine}):
        groups.update(shared)
    local = [groups[key] for key in chosen[rank * per_rank:(rank + 1) * per_rank]]
    samples = [s for _, group, _ in local for s in group]
    sample_problems = [problems[i] for i, _, _ in local for _ in range(G)]
    parts = {k: np.concatenate([p[k] for _, _, p in local]) for k in local[0][2]}
    generated = torch.cat(tables)
    metrics = {"frac_reward_zero_std": float(group_advantages(generated[:, 0], G)[1].float().mean()),
               **component_zero_std(generated[:, 1], generated[:, 2], G),
               "dynamic_sampling/extra_rounds": extra, "dynamic_sampling/groups_sampled": len(spread) + len(equal),
               "dynamic_sampling/groups_equal": len(equal),
               "dynamic_sampling/groups_filled": max(0, per_step - len(spread))}
    return samples, sample_problems, parts, gen_time, reward_time, metrics


def evaluate_policy(args, policy, tokenizer, problems, rank, world, device):
    """Greedy pass@1 and format rate on held-out problems, split over ranks (padded so that every rank makes the
    same generate() calls, as FSDP's lockstep decoding needs)."""
    per_rank = -(-len(problems) // world)
    local = problems[rank * per_rank:(rank + 1) * per_rank]
    counted = len(local)
    local = local + [problems[0]] * (per_rank - counted)
    samples = rollout(args, policy, tokenizer, local, 1, seed=0, temperature=0.0)[:counted]
    local = local[:counted]
    passed = fmt = 0.0
    for task in {p["task"] for p in local}:
        idx = [i for i, p in enumerate(local) if p["task"] == task]
        fmt += sum(TASKS[task]["format"](samples[i].text) for i in idx)
        passed += np.nansum(TASKS[task]["outcome"](args, [local[i] for i in idx], [samples[i] for i in idx]))
    passed, fmt, total = all_sum([passed, fmt, counted], device)
    return {"eval/pass@1": passed / total, "eval/format": fmt / total}


def autocast(args, policy):
    device_type = next(policy.parameters()).device.type
    if args.precision == "bf16" and args.parallel != "fsdp":  # FSDP casts through its MixedPrecisionPolicy
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


# -----------------------------------------------------------------------------
# A step's batch: sequences to train on (prompt + completion token ids, advantage, tokens trained)


def sft_sequences(args, tokenizer, problems, eos_id):
    """Prompt + reference completion + EOS; every completion token is trained."""
    seqs = []
    for p in problems:
        prompt_ids = encode_prompt(tokenizer, prompt_text(args, tokenizer, p))
        completion = tokenizer(completion_target(p), add_special_tokens=False)["input_ids"] + [eos_id]
        seqs.append(dict(ids=prompt_ids + completion, n_prompt=len(prompt_ids), n_tokens=len(completion),
                         advantage=0.0))
    return seqs


def grpo_sequences(args, samples, parts, eos_ids, pad_id, rank, device):
    """This rank's sequences with their advantages, and the step's reward metrics. Rewards are gathered from every
    rank first: group statistics (and batch scaling) see the whole batch, as in TRL."""
    lengths = [completion_length(s.token_ids, eos_ids) for s in samples]  # the mask: up to the first EOS
    truncated = [s.token_ids[n - 1] not in eos_ids | {pad_id} for s, n in zip(samples, lengths)]  # TRL's rule
    table = all_gather_rows(torch.tensor(np.stack(
        [parts["reward"], parts["r_fmt"], parts["r_out"], parts["r_proc"], lengths, truncated], 1),
        dtype=torch.float64, device=device)).cpu()
    advantages, zero_std = group_advantages(table[:, 0], args.group_size, args.scale_rewards)
    advantages = advantages[rank * len(samples):(rank + 1) * len(samples)].tolist()
    seqs = [dict(ids=s.prompt_token_ids + s.token_ids[:n], n_prompt=len(s.prompt_token_ids), advantage=a,
                 n_tokens=0 if args.mask_truncated and cut else n, engine_logps=s.logprobs[:n])
            for s, n, cut, a in zip(samples, lengths, truncated, advantages)]
    reward, r_fmt, r_out, r_proc, length, cut = table.numpy().T
    passed = r_out == 1
    mean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else None
    # R_proc of passing vs failing samples is where reward hacking shows (failing ones are scored only when
    # ungated or with --proc-all)
    metrics = dict(reward=mean(reward), reward_std=float(np.nanstd(reward, ddof=1)), r_fmt=mean(r_fmt),
                   pass_rate=mean(r_out), r_proc=mean(r_proc), r_proc_pass=mean(r_proc[passed]),
                   r_proc_fail=mean(r_proc[~passed]), exec_unknown=int(np.isnan(r_out).sum()),
                   frac_reward_zero_std=float(zero_std.float().mean()), completion_len=float(length.mean()),
                   completion_len_min=float(length.min()), completion_len_max=float(length.max()),
                   clipped_ratio=float(cut.mean()), terminated_len=mean(np.where(cut == 1, np.nan, length)))
    metrics.update(component_zero_std(table[:, 1], table[:, 2], args.group_size))
    if "r_len" in parts:
        total, count = all_sum([float(parts["r_len"].sum()), len(samples)], device)
        metrics["r_len"] = total / count
    return seqs, metrics


def component_zero_std(r_fmt, r_out, group_size):
    """Shares of samples whose group has equal rewards under R_out alone and under R_fmt + R_out (plain GRPO's
    reward): next to frac_reward_zero_std (the reward trained on), they show how many groups R_proc makes useful."""
    return {f"frac_reward_zero_std/{name}": float(group_advantages(r, group_size)[1].float().mean())
            for name, r in (("r_out", r_out), ("outcome", r_fmt + r_out))}


class TruncationWatch:
    """Warns once, loudly, when more than half of a step's completions hit --max-new-tokens for `steps` steps in a
    row: cut completions rarely hold an answer, so their reward (and with --mask-truncated their gradient) is lost
    without any error, and whole runs have been lost to a too small limit."""

    def __init__(self, steps=3):
        self.steps, self.in_a_row, self.warned = steps, 0, False

    def update(self, clipped_ratio, max_new_tokens):
        """The warning's text the first time the condition holds, else None."""
        self.in_a_row = self.in_a_row + 1 if clipped_ratio > 0.5 else 0
        if self.in_a_row < self.steps or self.warned:
            return None
        self.warned = True
        return (f"\n{'!' * 100}\nWARNING: more than half of the completions hit --max-new-tokens {max_new_tokens} "
                f"for {self.steps} steps in a row (clipped_ratio {clipped_ratio:.2f}): cut before their answer, they "
                f"earn little reward and teach little. Raise --max-new-tokens, or penalise length near the limit with "
                f"--overlong-buffer.\n{'!' * 100}")


def dump_samples(args, step, problems, samples, parts, seqs, rank):
    rows = [dict(task_id=p["task_id"], completion=s.text, finish_reason=s.finish_reason, tokens=len(s.token_ids),
                 reward=parts["reward"][i], r_fmt=parts["r_fmt"][i], r_out=parts["r_out"][i],
                 r_proc=None if np.isnan(parts["r_proc"][i]) else parts["r_proc"][i], advantage=seq["advantage"])
            for i, (p, s, seq) in enumerate(zip(problems, samples, seqs))]
    every_rank = all_gather_objects(rows)
    if rank == 0:
        os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
        with open(os.path.join(args.out, "samples", f"step_{step:06d}.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for rows in every_rank for row in rows)


# -----------------------------------------------------------------------------
# One optimizer step (or num_iterations of them) on a batch of sequences


def optimize(args, module, policy, ref_policy, optimizer, scheduler, seqs, pad_id, device, world):
    """seqs: this rank's sequences, each with ids, n_prompt, advantage and weight (0: not trained). Returns this
    rank's sums of per-token statistics and of the loss, and the gradient norm."""
    # A sequence with zero weight, or zero advantage and no KL, has exactly zero gradient: skip its forward.
    trained = [s for s in seqs if s["weight"] and (args.algo == "sft" or s["advantage"] or args.beta)]
    batches = micro_batches([len(s["ids"]) for s in trained], args.token_budget)
    # every rank runs the same number of forward/backward passes (FSDP all-gathers in each; DDP reduces in the last)
    n_micro = max(1, len(batches))
    if dist.is_initialized():
        count = torch.tensor([n_micro], device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        n_micro = int(count.item())
    batches += [[]] * (n_micro - len(batches))
    # Sharing a prompt's forward among its samples needs the key/value cache, which gradient checkpointing turns off;
    # with FSDP the layers would run (and all-gather) twice per micro-batch.
    share_prompts = not args.grad_ckpt and args.parallel != "fsdp"
    inputs = [collate([trained[i] for i in b], pad_id, device, share_prompts) for b in batches]

    # log-probs that stay fixed through the updates: the sampling policy's (only needed when the weights move
    # between updates on this batch) and the reference model's (only with a KL term)
    old_logps, ref_logps = [None] * n_micro, [None] * n_micro
    with torch.no_grad(), autocast(args, policy):
        for k, (model_inputs, _, _) in enumerate(inputs):
            if args.num_iterations > 1:
                old_logps[k] = module(**model_inputs)[0]
            if args.beta:
                ref_logps[k] = ref_policy(**model_inputs)[0]

    names = ("tokens", "entropy", "loss", "clip_low", "clip_high", "clip_region", "kl") + MISMATCH_SUMS
    totals = torch.zeros(len(names), dtype=torch.float64, device=device)  # summed on the device: no syncs
    extremes = torch.full((len(MISMATCH_MAXES),), -math.inf, dtype=torch.float64, device=device)
    engine = [engine_logprobs([trained[i] for i in b], device) if args.algo == "grpo" else None for b in batches]
    is_weights = [None] * n_micro
    grad_norms = []
    for iteration in range(args.num_iterations):
        for k, (model_inputs, advantages, weights) in enumerate(inputs):
            set_grad_sync(module, k == n_micro - 1)
            with autocast(args, policy):
                logps, entropy = module(**model_inputs)
            if args.algo == "sft":
                token_loss, ratio, kl = -logps, torch.ones_like(logps), None
            else:
                old = old_logps[k] if old_logps[k] is not None else logps.detach()  # on-policy: r = 1 exactly
                if iteration == 0 and engine[k] is not None:  # the sampling policy's log-probs, as the engine saw them
                    is_weights[k] = measure_mismatch(args, old, *engine[k], weights > 0,
                                                     totals[-len(MISMATCH_SUMS):], extremes)
                token_loss, ratio, kl = per_token_loss(logps, old, ref_logps[k], advantages, args.epsilon,
                                                       args.epsilon_high, args.beta, is_weights[k])
            # weights are global, and DDP/FSDP average gradients over ranks: multiply back by the world size
            loss = (token_loss * weights).sum() * world
            loss.backward()
            real = weights > 0
            low = (ratio < 1 - args.epsilon) & (advantages < 0) & real
            high = (ratio > 1 + args.epsilon_high) & (advantages > 0) & real
            totals[:7] += torch.stack([real.sum(), entropy[real].sum(), loss.detach() / world / args.num_iterations,
                                       low.sum(), high.sum(), (low | high).sum(),
                                       kl.detach()[real].sum() if kl is not None else real.sum() * 0]).double()
        grad_norms.append(nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm or float("inf")))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    grad_norm = float(np.mean([float(n.full_tensor() if hasattr(n, "full_tensor") else n) for n in grad_norms]))
    return dict(zip(names, totals.tolist())) | dict(zip(MISMATCH_MAXES, extremes.tolist())), grad_norm


# Engine/trainer mismatch statistics of a step: sums over ranks (token count, |diff| sum, IS ratio sum) and maxima
MISMATCH_SUMS = ("mismatch_tokens", "logp_diff_sum", "is_ratio_sum")
MISMATCH_MAXES = ("logp_diff_max", "is_ratio_max", "is_ratio_neg_min")


def measure_mismatch(args, train_logps, engine_logps, sequence_index, real, sums, maxes):
    """Adds this micro-batch's |logp_train - logp_engine| over trained tokens (and the --rollout-is ratios) to the
    step's sums and maxima, in place; returns the --rollout-is weights (None when off)."""
    diff = (train_logps - engine_logps).abs()[real]
    weights = rollout_is_weights(train_logps, engine_logps, sequence_index, args.rollout_is, args.rollout_is_cap) \
        if args.rollout_is else None
    ratio = weights[real] if weights is not None else torch.ones_like(diff)
    sums += torch.stack([real.sum(), diff.sum(), ratio.sum()]).double()
    if real.any():
        torch.maximum(maxes, torch.stack([diff.max(), ratio.max(), -ratio.min()]).double(), out=maxes)
    return weights


def mismatch_metrics(args, totals):
    """TRL's names: sampling/sampling_logp_difference/{mean,max}, sampling/importance_sampling_ratio/*."""
    n = totals["mismatch_tokens"]
    if not n:
        return {}
    metrics = {"sampling/sampling_logp_difference/mean": totals["logp_diff_sum"] / n,
               "sampling/sampling_logp_difference/max": totals["logp_diff_max"]}
    if args.rollout_is:
        metrics.update({"sampling/importance_sampling_ratio/min": -totals["is_ratio_neg_min"],
                        "sampling/importance_sampling_ratio/mean": totals["is_ratio_sum"] / n,
                        "sampling/importance_sampling_ratio/max": totals["is_ratio_max"]})
    return metrics


# -----------------------------------------------------------------------------
# The toy world: with no --model, the whole ReCode pipeline end to end on a CPU in minutes
#
# synth.py's toy tasks (train / held-out by template) -> CRPL variants of their references by the rule-based toy
# teacher -> a byte-level BPE tokenizer and a tiny Qwen2 policy built from a config -> SFT warm start on the
# references of part of the training tasks -> a reward model trained by reward.py from the warm start -> GRPO with
# the outcome reward, the ungated reward and the gated reward (CG-GRPO), each from the warm start -> held-out
# pass@1 (greedy, and sampled at the training temperature), mean R_proc and mean reasoning length, for the warm
# start and the three runs. Every stage writes into --out (default runs/toy) and is skipped when its artifact is there.
#
# Two worlds (--toy-world), each built from properties of real data and real reward models.
#
# weak-tests (the default): an imperfect outcome reward, where the gate can help.
# - The warm start's references are of mixed quality, like scraped solutions: a share (sft_slip_fraction) carries a
#   slip (x > 4 for "greater than 5", the other parity) in the reasoning and the code alike.
# - Most training tasks (weak_fraction) carry weak tests, like a scraped dataset's few asserts: 3 cases, never the
#   filter's boundary value, so a boundary slip passes them. The other training tasks and the held-out ones are
#   scored with strong tests (10 cases, 5 around the boundary value), like EvalPlus's plus tests; the table also
#   scores the held-out tasks on their weak tests, to show the gap.
# - The reward model (problem and reasoning) learns slip pairs (the reference over its slipped copy) beside the CRPL
#   pairs, so among samples that pass it can tell the careful solution from the lucky one.
# - Its exploitable weakness is length, as in real reward models: the toy teacher's optimized rewrite is longer
#   and scores near 1, but under the completion budget (rl max_new_tokens) that style's code is cut off, so it
#   never passes: gated it earns nothing, ungated it earns R_proc (r_proc_fail and clipped_ratio in metrics.jsonl).
#
# style-bias: perfect tests (every task's tests hold the boundary value) and a reward model that over-values a style
# the policy can finish (the optimized rewrite fits the budget). Ungated, R_proc pays for the style even when the
# code fails and the policy switches to it; gated, only passing samples earn it, which slows the switch but, once
# the style passes often enough, does not stop it: the gate does not correct a reward model's bias among passing
# samples. The toy math world (--toy-task math) uses these settings.

TOY_STYLE_BIAS = dict(
    tasks_per_template=5, heldout_fraction=0.2, sft_fraction=0.5, sft_optimized_fraction=0.25, sft_slip_fraction=0.6,
    eval_samples=8, vocab_size=512,
    model=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2),
    sft=dict(steps=200, batch_size=32, lr=2e-3, eval_every=25),
    rm=dict(steps=60, batch_size=16, lr=5e-4),
    rl=dict(steps=40, batch_size=128, group_size=8, max_new_tokens=144, temperature=0.7, lr=3e-4, warmup_steps=10,
            eval_every=10),
)
TOY_WORLDS = {
    "weak-tests": dict(TOY_STYLE_BIAS, weak_fraction=0.95, slip_in_constant=True,
                       rm=dict(TOY_STYLE_BIAS["rm"], steps=90), rl=dict(TOY_STYLE_BIAS["rl"], max_new_tokens=112)),
    "style-bias": TOY_STYLE_BIAS,
}
TOY_RUNS = {"outcome GRPO": "outcome", "ungated": "ungated", "CG-GRPO": "gated"}


def toy_settings(args):
    """The world's settings with --toy-scale applied to every number of steps and to the tasks per template."""
    base = TOY_WORLDS[args.toy_world]
    scaled = json.loads(json.dumps(base))
    for stage in ("sft", "rm", "rl"):
        scaled[stage]["steps"] = max(1, round(base[stage]["steps"] * args.toy_scale))
    for stage in ("sft", "rl"):
        scaled[stage]["eval_every"] = max(1, round(base[stage]["eval_every"] * args.toy_scale))
    scaled["tasks_per_template"] = max(1, round(base["tasks_per_template"] * min(1.0, args.toy_scale)))
    return dict(scaled, seed=args.seed, toy_scale=args.toy_scale, toy_task=args.toy_task, toy_world=args.toy_world)


def write_jsonl(path, rows):
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(path + ".tmp", path)


def finished(run_dir, steps):
    """The checkpoint of a finished run, or None."""
    newest = latest_checkpoint(run_dir)
    return newest if newest and newest.endswith(f"step_{steps:06d}") else None


def toy_stage(title, t0):
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"\n=== toy world [{time.perf_counter() - t0:5.0f}s] {title}", flush=True)


def toy_data(cfg, out, master):
    """Tasks, the CRPL records of the train and held-out tasks, and the SFT subset. A share of the SFT references
    (sft_optimized_fraction) is the toy teacher's optimized rewrite: the warm start can then write both the plain
    style and the longer one the reward model prefers, as a real policy can write both terse and verbose reasoning.
    weak-tests: the weak share of the training tasks trains on its weak tests, the rest and the held-out tasks on
    their strong ones; and the slip pairs of the train and held-out tasks (toy_slip_pairs)."""
    from synth import main as synth_main, toy_math_tasks, toy_tasks
    paths = {name: os.path.join(out, "data", f"{name}.jsonl") for name in ("train", "heldout", "sft")}
    crpl = {name: os.path.join(out, "data", f"crpl_{name}.jsonl") for name in ("train", "heldout")}
    slips = {name: os.path.join(out, "data", f"slip_pairs_{name}.jsonl") for name in ("train", "heldout")}
    if master:
        os.makedirs(os.path.join(out, "data"), exist_ok=True)
        make_tasks = toy_math_tasks if cfg["toy_task"] == "math" else toy_tasks
        train_tasks, heldout_tasks = make_tasks(cfg["seed"], cfg["tasks_per_template"], cfg["heldout_fraction"])
        if cfg["toy_world"] == "weak-tests":
            train_tasks = [toy_with_tests(t, "weak" if random.Random(f"{cfg['seed']}:weak:{t['task_id']}").random()
                                          < cfg["weak_fraction"] else "strong") for t in train_tasks]
            heldout_tasks = [toy_with_tests(t, "strong") for t in heldout_tasks]
            for name, tasks in (("train", train_tasks), ("heldout", heldout_tasks)):
                if not os.path.exists(slips[name]):
                    write_jsonl(slips[name], toy_slip_pairs(tasks, cfg["slip_in_constant"]))
        for name, rows in (("train", train_tasks), ("heldout", heldout_tasks)):
            if not os.path.exists(paths[name]):
                write_jsonl(paths[name], rows)
        for name in ("train", "heldout"):  # resumes: a finished file is skipped quickly
            synth_main(["crpl", "--problems", paths[name], "--teacher", "toy", "--out", crpl[name],
                        "--seed", str(cfg["seed"]), "--exec-workers", str(default_workers())])
        if not os.path.exists(paths["sft"]):
            optimized = {r["id"]: r["optimized"]["reasoning"] for r in read_jsonl(crpl["train"]) if r["optimized"]}
            sft_tasks = []
            for t in train_tasks:
                draw = random.Random(f"{cfg['seed']}:{t['task_id']}")
                if draw.random() < cfg["sft_fraction"]:
                    reference = dict(t["reference"])
                    if draw.random() < cfg["sft_optimized_fraction"] and t["task_id"] in optimized:
                        reference["reasoning"] = optimized[t["task_id"]]
                    if draw.random() < cfg["sft_slip_fraction"]:
                        reference = toy_slip(reference, in_constant=cfg.get("slip_in_constant", False))
                    sft_tasks.append(dict(t, reference=reference))
            write_jsonl(paths["sft"], sft_tasks)
    barrier()
    return paths, crpl, (slips if cfg["toy_world"] == "weak-tests" else None)


def toy_with_tests(task, strength):
    """The task scored with its weak or strong tests (synth.toy_weak_and_strong_tests), both kept beside `tests` so
    that the table and the tests can score either."""
    return dict(task, tests=task[f"{strength}_tests"], weak=strength == "weak")


def toy_slip_pairs(tasks, in_constant):
    """Reward-model pairs that tell careful reasoning from slipped reasoning: each task's reference over its slipped
    copy (the world's slip, toy_slip in_constant), pair type 'slip'. Like the toy teacher's factual degradation, the
    slip contradicts the problem ("greater than 5" but x > 4), here in the one place weak tests do not look."""
    return [{"problem": t["prompt"], "chosen": t["reference"], "rejected": toy_slip(t["reference"], in_constant),
             "pair_type": "slip", "task_id": t["task_id"]} for t in tasks]


TOY_SLIPS = [(" > ", " >= "), (" < ", " <= "), ("% 2 == 0", "% 2 == 1"), ("% 2 == 1", "% 2 == 0")]


def toy_slip(reference, in_constant=False):
    """The reference with the slip a hurried author makes, in the reasoning and the result alike, so the solution
    is consistent and wrong. Code: >= for >, <= for <, the other parity (strong tests hold the boundary value); with
    in_constant, the same boundary slip in the constant instead (x > 4 for "greater than 5", x < 1 for "negative"):
    the text keeps its length, so a reward model cannot tell the slip by length alone.
    Math: the last step's result one too high, carried into the answer."""
    if "answer" in reference:
        answer = reference["answer"]
        slipped = str(int(answer) + 1)
        lines = reference["reasoning"].split("\n")
        last_step = max(i for i, line in enumerate(lines) if f"= {answer}" in line)
        lines[last_step] = re.sub(rf"= {answer}\b", f"= {slipped}", lines[last_step])
        lines[last_step + 1:] = [re.sub(rf"\b{answer}\b", slipped, line) for line in lines[last_step + 1:]]
        return dict(reference, reasoning="\n".join(lines), answer=slipped)
    condition = re.search(r" if (.+?)[)\]]", reference["code"])[1]
    comparison = re.fullmatch(r"x ([<>]) (-?\d+)", condition)
    if in_constant and comparison:
        op, k = comparison[1], int(comparison[2])
        slipped = f"x {op} {k - 1 if op == '>' else k + 1}"
    else:
        slipped = next(condition.replace(a, b, 1) for a, b in TOY_SLIPS if a in condition)
    return dict(reference, reasoning=reference["reasoning"].replace(condition, slipped),
                code=reference["code"].replace(condition, slipped))


def toy_base_model(cfg, out, paths, crpl, master):
    """A byte-level BPE tokenizer trained on every text of the world, and a random tiny Qwen2 of the world's shape."""
    from synth import tiny_model, train_tiny_tokenizer
    base = os.path.join(out, "base")
    if master and not os.path.exists(os.path.join(base, "config.json")):
        texts = [p["prompt"] + completion_target(p) for p in read_jsonl(paths["train"]) + read_jsonl(paths["heldout"])]
        texts += [v["reasoning"] for path in crpl.values() for r in read_jsonl(path)
                  for v in (r["optimized"], r["degraded"]) if v]
        tokenizer = train_tiny_tokenizer(texts, cfg["vocab_size"])
        model = tiny_model(tokenizer, seed=cfg["seed"], max_position_embeddings=512, **cfg["model"])
        tokenizer.save_pretrained(base + ".tmp")
        model.save_pretrained(base + ".tmp")
        os.replace(base + ".tmp", base)
    barrier()
    return base


def toy_train(argv, out_dir, steps):
    """grpo.py's own train() on a toy stage, resumed if it was interrupted; the final checkpoint."""
    if not finished(out_dir, steps):
        train(parse_args(argv + ["--out", out_dir, "--steps", str(steps)]
                         + (["--resume"] if latest_checkpoint(out_dir) else [])))
    return finished(out_dir, steps)


def toy_reward_model(cfg, out, crpl, slips, warm_start):
    """reward.py trains the reward model on the train tasks' CRPL records (and slip pairs), from the warm start's
    weights."""
    rm_dir = os.path.join(out, "rm")
    s = cfg["rm"]
    done = reward.latest_checkpoint(rm_dir)
    if done and done.endswith(f"step_{s['steps']:06d}"):
        return rm_dir
    data = [crpl["train"]] + ([slips["train"]] if slips else [])
    reward.train(reward.parse_args(["train", "--data", *data, "--model", warm_start, "--out", rm_dir,
                                    "--steps", str(s["steps"]), "--batch-size", str(s["batch_size"]),
                                    "--lr", str(s["lr"]), "--max-length", "256", "--no-grad-ckpt",
                                    "--seed", str(cfg["seed"]), "--save-every", str(s["steps"])]
                                   + (["--resume"] if done else [])))
    return rm_dir


def toy_rm_accuracy(rm, crpl, slips):
    """The reward model's pairwise accuracy on the held-out tasks' pairs, per pair type and in all, beside that of
    'the longer wins': {type: {pairs, acc, longer_wins}}."""
    summary, _ = reward.evaluate(rm[0], rm[1], reward.read_groups([crpl["heldout"]]))
    if slips:  # kept out of "all", so that it stays the CRPL pairs' figure
        summary["slip"] = reward.evaluate(rm[0], rm[1], reward.read_groups([slips["heldout"]]))[0]["slip"]
    return summary


def toy_evaluate(args, policy_dir, problems, rm, rank, world, device, samples_per_task, temperature, weak):
    """Held-out completions scored as in training (R_proc of every sample, as ungated): greedy pass@1 on the tests
    and, with `weak`, on the tasks' weak tests too; and, from `samples_per_task` completions each at the
    training temperature, sampled pass@1 (the mean pass rate, the usual unbiased estimate), format rate, mean R_proc,
    R_proc of the failing samples, the share cut off by the completion budget and mean reasoning length in tokens:
    the policy as RL sees it."""
    _, policy, tokenizer = build_policy(args, policy_dir, device, world, trainable=False)
    per_rank = -(-len(problems) // world)
    local = problems[rank * per_rank:(rank + 1) * per_rank]
    scored = argparse.Namespace(**dict(vars(args), reward="ungated", proc_all=True))
    rows = {}
    for mode, n, mode_temperature in (("greedy", 1, 0.0), ("sampled", samples_per_task, temperature)):
        samples = rollout(args, policy, tokenizer, local, n, seed=0, temperature=mode_temperature) if local else []
        asked = [p for p in local for _ in range(n)]
        parts = compute_rewards(scored, asked, samples, rm) if local else dict(r_fmt=[], r_out=[], r_proc=[])
        weak_out = (code_outcome_reward(args, [dict(p, tests={"base": p["weak_tests"]}) for p in asked], samples)
                    if weak and local else [math.nan] * len(samples))
        think = [split_reasoning(s.text)[0] or "" for s in samples]
        mine = [dict(mode=mode, task_id=p["task_id"], completion=s.text, r_fmt=float(f), r_out=float(o),
                     r_out_weak=float(w), r_proc=float(r), cut=s.finish_reason == "length",
                     think_tokens=len(tokenizer(t, add_special_tokens=False)["input_ids"]))
                for p, s, t, f, o, w, r in zip(asked, samples, think, parts["r_fmt"], parts["r_out"], weak_out,
                                               parts["r_proc"])]
        rows[mode] = [row for ranks in all_gather_objects(mine) for row in ranks]
    mean = lambda mode, key, keep=lambda row: True: (
        float(np.mean([row[key] for row in rows[mode] if keep(row)])) if any(map(keep, rows[mode])) else None)
    summary = dict(pass1_greedy=mean("greedy", "r_out"), pass1_sampled=mean("sampled", "r_out"),
                   pass1_weak_greedy=mean("greedy", "r_out_weak") if weak else None,
                   format=mean("sampled", "r_fmt"), r_proc=mean("sampled", "r_proc"),
                   r_proc_fail=mean("sampled", "r_proc", lambda row: row["r_out"] != 1),
                   cut=mean("sampled", "cut"), think_tokens=mean("sampled", "think_tokens"))
    return summary, rows["greedy"] + rows["sampled"]


def toy_training_summary(run_dir, last=5):
    """From a run's metrics.jsonl: frac_reward_zero_std over every step, and R_proc of the failing samples over its
    last `last` steps and at its highest (every sample is scored: --proc-all)."""
    logged = [m for m in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
              if m.get("frac_reward_zero_std") is not None]
    fails = [m["r_proc_fail"] for m in logged if m.get("r_proc_fail") is not None]
    return dict(frac_reward_zero_std=float(np.mean([m["frac_reward_zero_std"] for m in logged])),
                train_r_proc_fail_end=float(np.mean(fails[-last:])) if fails else None,
                train_r_proc_fail_max=max(fails) if fails else None,
                train_clipped_end=float(np.mean([m["clipped_ratio"] for m in logged[-last:]])))


def toy_plot(out, runs):
    """Reward, R_proc and held-out pass@1 along training, one line per run (only where matplotlib is installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no matplotlib, so no plot; pip install matplotlib for {os.path.join(out, 'curves.png')})")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, run_dir in runs.items():
        logged = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        for ax, key in zip(axes, ("reward", "r_proc", "eval/pass@1")):
            points = [(m["step"], m[key]) for m in logged if m.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=name)
            ax.set_title(key + (" (train samples)" if key != "eval/pass@1" else " (held-out, greedy)"))
            ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=100)
    print(f"plot: {os.path.join(out, 'curves.png')}")


def toy_world(args):
    """The whole pipeline, as the README's GPU pipeline runs it, at toy size; returns the results table (also in
    OUT/results.json)."""
    t0 = time.perf_counter()
    rank, world, device = setup_distributed()
    master = rank == 0
    # one thread per rank: the table is then bit-reproducible (with several threads some training kernels sum in a
    # schedule-dependent order, and RL amplifies a last-bit difference into a different run), the model is too
    # tiny to gain much from more, and on a busy CPU more threads than free cores stall each other (10x slower)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or 1)
    torch.set_flush_denormal(True)  # tiny gradients and Adam states turn subnormal on CPU: steps slow down 20x
    cfg, out = toy_settings(args), args.out
    claim_toy_dir(cfg, out, master)
    if master:
        print(f"toy world (no --model; --model trains a real model): the whole pipeline, SFT -> reward model -> "
              f"outcome, ungated and gated GRPO, on tiny models on this CPU, about 10 minutes, in {out} ({world} "
              f"rank(s)):\n" + json.dumps(cfg, indent=1))

    toy_stage("1/6 tasks and CRPL variants (synth.py, toy teacher)", t0)
    paths, crpl, slips = toy_data(cfg, out, master)
    toy_stage("2/6 tokenizer and tiny policy", t0)
    base = toy_base_model(cfg, out, paths, crpl, master)
    common = ["--prompt-format", "raw", "--seed", str(args.seed), "--keep", "1", "--save-every", "0",
              "--exec-workers", str(default_workers())]
    toy_stage("3/6 SFT warm start on the references of part of the training tasks", t0)
    s = cfg["sft"]
    warm = toy_train(["--model", base, "--algo", "sft", "--data", paths["sft"], "--batch-size", str(s["batch_size"]),
                      "--lr", str(s["lr"]), "--dump-every", "0", "--eval-data", paths["heldout"],
                      "--eval-every", str(s["eval_every"]), "--max-new-tokens", str(cfg["rl"]["max_new_tokens"])]
                     + common,
                     os.path.join(out, "sft"), s["steps"])
    toy_stage("4/6 reward model (reward.py, Bradley-Terry on the CRPL and slip pairs of the training tasks)", t0)
    rm_dir = toy_reward_model(cfg, out, crpl, slips, warm)
    rm = reward.load_reward_model(rm_dir, device=device)
    rl = cfg["rl"]
    rl_argv = ["--data", paths["train"], "--reward-model", rm_dir, "--batch-size", str(rl["batch_size"]),
               "--group-size", str(rl["group_size"]), "--max-new-tokens", str(rl["max_new_tokens"]),
               "--temperature", str(rl["temperature"]), "--lr", str(rl["lr"]),
               "--warmup-steps", str(rl["warmup_steps"]), "--eval-data", paths["heldout"],
               "--eval-every", str(rl["eval_every"]), "--dump-every", "1", "--proc-all"] + common
    # the same rewards either way, so not one of the toy settings: a finished run is reused whatever this flag says
    rl_argv += ["--overlap-rewards"] if args.overlap_rewards else []
    policies, runs = {"warm start (SFT)": warm}, {}
    for k, (name, mode) in enumerate(TOY_RUNS.items()):
        toy_stage(f"5/6 GRPO run {k + 1}/3: {name} (--reward {mode}), from the warm start", t0)
        runs[name] = os.path.join(out, mode)
        policies[name] = toy_train(["--model", warm, "--reward", mode] + rl_argv, runs[name], rl["steps"])
    toy_stage("6/6 held-out evaluation (greedy pass@1, R_proc, reasoning length)", t0)
    heldout = load_problems([paths["heldout"]], tasks=TASKS)
    table = toy_table(cfg, policies, heldout, rm, rank, world, device)
    for name, run_dir in runs.items():
        table[name].update(toy_training_summary(run_dir))
    rm_pairs = toy_rm_accuracy(rm, crpl, slips)
    results = dict(table=table, rm_heldout_pair_acc=rm_pairs["all"]["acc"],
                   rm_heldout_longer_wins=rm_pairs["all"]["longer_wins"], rm_heldout_pairs=rm_pairs,
                   heldout_tasks=len(heldout), seconds=time.perf_counter() - t0)
    if master:
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        print_toy_results(cfg, results, os.path.join(out, "results.json"))
        toy_plot(out, runs)
    return results


def claim_toy_dir(cfg, out, master):
    """--out for this toy world: a folder made with other settings is refused, so that no stage reuses an artifact
    of another world; the settings are written on first use."""
    os.makedirs(out, exist_ok=True)
    settings_path = os.path.join(out, "toy_config.json")
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            if json.load(f) != cfg:
                fail(f"{out} holds a toy world made with other settings ({settings_path}): choose another --out "
                     f"or delete it")
    barrier()
    if master and not os.path.exists(settings_path):
        with open(settings_path, "w") as f:
            json.dump(cfg, f, indent=1)


def toy_table(cfg, policies, heldout, rm, rank, world, device):
    """toy_evaluate of every policy, each kept in its checkpoint (toy_eval.json) so that a rerun reuses it."""
    rl = cfg["rl"]
    eval_args = parse_args(["--prompt-format", "raw", "--max-new-tokens", str(rl["max_new_tokens"]),
                            "--exec-workers", str(default_workers())])
    table = {}
    for name, policy_dir in policies.items():
        cache = os.path.join(policy_dir, "toy_eval.json")
        if os.path.exists(cache):
            with open(cache) as f:
                table[name] = json.load(f)
            continue
        table[name], rows = toy_evaluate(eval_args, policy_dir, heldout, rm, rank, world, device,
                                         cfg["eval_samples"], rl["temperature"], cfg["toy_world"] == "weak-tests")
        if rank == 0:
            write_jsonl(os.path.join(policy_dir, "toy_eval_samples.jsonl"), rows)
            with open(cache + ".tmp", "w") as f:  # renamed into place: a kill never leaves half a cache
                json.dump(table[name], f)
            os.replace(cache + ".tmp", cache)
        barrier()
    return table


def print_toy_results(cfg, results, path):
    print(f"\nHeld-out tasks: {results['heldout_tasks']} (template combinations never trained on)")
    weak = cfg["toy_world"] == "weak-tests"
    cell = lambda value, width, scale=1.0, digits=1: (f"{scale * value:>{width}.{digits}f}" if value is not None
                                                      else f"{'-':>{width}}")
    print(f"{'':<18}{'pass@1':>8}{'pass@1':>9}" + (f"{'weak':>7}" if weak else "")
          + f"{'':>8}{'R_proc':>8}{'cut':>6}{'reasoning':>11}{'':>8}{'zero-std':>10}{'R_proc fail':>13}")
    print(f"{'policy':<18}{'greedy':>8}{'sampled':>9}" + (f"{'tests':>7}" if weak else "")
          + f"{'R_proc':>8}{'fail':>8}{'%':>6}{'tokens':>11}{'format':>8}{'(train)':>10}{'(train end)':>13}")
    for name, row in results["table"].items():
        print(f"{name:<18}{cell(row['pass1_greedy'], 8, 100)}{cell(row['pass1_sampled'], 9, 100)}"
              + (cell(row.get("pass1_weak_greedy"), 7, 100) if weak else "")
              + f"{cell(row['r_proc'], 8, digits=3)}{cell(row.get('r_proc_fail'), 8, digits=3)}"
              f"{cell(row.get('cut'), 6, 100)}{cell(row['think_tokens'], 11)}{cell(row['format'], 8, 100)}"
              f"{cell(row.get('frac_reward_zero_std'), 10, digits=3)}"
              f"{cell(row.get('train_r_proc_fail_end'), 13, digits=3)}")
    print(f"(greedy on the strong tests{' and on the weak ones' if weak else ''}; sampled: {cfg['eval_samples']} "
          f"completions per task at temperature {cfg['rl']['temperature']}, as in training, and R_proc, R_proc of "
          f"the failing ones, the share cut off at {cfg['rl']['max_new_tokens']} tokens, reasoning tokens and "
          f"format from those; zero-std: frac_reward_zero_std over the training steps; R_proc fail: training "
          f"samples, mean of the last 5 steps)")
    pairs = results["rm_heldout_pairs"]
    print("reward model, held-out pairs: " + ", ".join(
        f"{kind} {100 * row['acc']:.1f}% ({row['pairs']} pairs, 'the longer wins' {100 * row['longer_wins']:.1f}%)"
        for kind, row in pairs.items()))
    print(f"toy world done in {results['seconds']:.0f}s; results in {path}")


def main():
    args = parse_args()
    toy_world(args) if not args.model else train(args)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
