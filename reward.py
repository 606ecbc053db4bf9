"""
reward.py: the reasoning-process reward model of ReCode, trained with CRPL and measured on LCB-RB; and the trainer
plumbing grpo.py shares (process group, LR schedule, packing, activation checkpointing, FSDP2, checkpoints).

A causal-LM backbone (any transformers architecture, loaded with AutoModel: no LM head) and a linear scalar head read
at the last real token of one input template (PROMPT_TEMPLATE, then CODE_TEMPLATE for a model trained with
--include-code, then EOS; a long text is cut on the left, so the end of the reasoning always survives). It learns
the order optimized > original > degraded of synth.py's CRPL records, or chosen > rejected of pair files, with a
Bradley-Terry loss; the texts of one problem are scored in one micro-batch. Its pairwise accuracy on LCB-RB and
RewardBench files measures it, and score() gives grpo.py R_proc = sigmoid(head) in [0, 1].

    python reward.py train --data crpl.jsonl --model Qwen/Qwen2.5-Coder-7B-Instruct --out runs/rm
    torchrun --standalone --nproc_per_node=8 reward.py train --data crpl.jsonl \\
        --model Qwen/Qwen2.5-Coder-7B-Instruct --out runs/rm --parallel fsdp --eval-data lcb_rb.jsonl
    python reward.py train ... --resume           # continue runs/rm from its newest checkpoint
    python reward.py eval --rm runs/rm --data lcb_rb.jsonl rewardbench.jsonl [--out results.json]

From Python (grpo.py):
    rm, rm_tokenizer = load_reward_model("runs/rm", device="cuda")
    r_proc = score(rm, rm_tokenizer, problems, reasonings, codes=None, batch_size=16)  # floats in [0, 1]
File formats (CRPL records, pair files): README.md.
"""

import argparse
import inspect
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from synth import CRPL_PAIRS, DTYPES, fail, read_jsonl

PROMPT_TEMPLATE = "Problem:\n{problem}\n\nReasoning:\n{reasoning}\n"
CODE_TEMPLATE = "\nCode:\n```python\n{code}\n```\n"
VARIANT_LEVELS = {"optimized": 2, "original": 1, "degraded": 0}
HEAD_FILE, RM_CONFIG_FILE = "reward_head.safetensors", "reward_config.json"
TRAINER_STATE_FILE, OPTIMIZER_FILE, RUN_CONFIG_FILE = "trainer_state.pt", "optimizer.pt", "run_config.json"


def format_input(problem, reasoning, code=None):
    text = PROMPT_TEMPLATE.format(problem=problem.strip(), reasoning=reasoning.strip())
    if code is not None:
        text += CODE_TEMPLATE.format(code=code.strip())
    return text


# ----------------------------------------------------------------------------------------------------------------
# Model


class RewardModel(nn.Module):
    """AutoModel backbone + Linear(hidden, 1) read at the last position where attention_mask is 1."""

    def __init__(self, backbone, rm_config):
        super().__init__()
        self.backbone = backbone
        self.rm_config = dict(rm_config)  # include_code, max_length: the input format travels with the weights
        hidden = backbone.get_input_embeddings().embedding_dim
        # no bias: the Bradley-Terry loss cannot see a constant offset; small init as in OpenRLHF's value head
        self.head = nn.Linear(hidden, 1, bias=False, dtype=torch.float32)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1))
        self.takes_position_ids = "position_ids" in inspect.signature(backbone.forward).parameters

    def forward(self, input_ids, attention_mask):
        extra = {}
        if self.takes_position_ids:
            # HF numbers positions 0..T-1 whatever the padding; counting real tokens makes left padding match right
            extra["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.long() * positions).argmax(-1)  # last real token, for left or right padding
        picked = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        # the head runs in fp32 even under bf16 autocast / FSDP mixed precision: bf16 scores make exact ties
        with torch.autocast(device_type=picked.device.type, enabled=False):
            return F.linear(picked.float(), self.head.weight.float()).squeeze(-1)


def load_tokenizer(path, trust_remote_code=False):
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # the pad id only fills positions the attention mask hides; the score never reads it
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ValueError(f"{path}: the tokenizer has no pad, eos or unk token to pad with")
    return tokenizer


def load_backbone(path, dtype=torch.float32, trust_remote_code=False):
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    for key, value in config.to_dict().items():  # dropout makes chosen and rejected see different noise
        if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
            setattr(config, key, 0.0)
    config.use_cache = False
    backbone = AutoModel.from_pretrained(path, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
    for module in backbone.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return backbone


def load_reward_model(path, device=None, dtype=None, trust_remote_code=False):
    """-> (RewardModel in eval mode, tokenizer). dtype default: bf16 on CUDA, fp32 elsewhere; the head stays fp32.

    path: a reward-model directory, or a training run directory (its latest step_* checkpoint is loaded)."""
    checkpoint = path if os.path.isfile(os.path.join(path, RM_CONFIG_FILE)) else latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: not a reward model ({RM_CONFIG_FILE} missing) nor a run with checkpoints")
    path = checkpoint
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, str):  # "bf16", "fp16", "fp32" or a torch name such as "bfloat16"
        dtype = DTYPES.get(dtype) or getattr(torch, dtype)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with open(os.path.join(path, RM_CONFIG_FILE)) as f:
        rm_config = json.load(f)
    if (rm_config.get("template"), rm_config.get("code_template")) != (PROMPT_TEMPLATE, CODE_TEMPLATE):
        print(f"warning: {path} was trained with another input template; its scores may be off", file=sys.stderr)
    model = RewardModel(load_backbone(path, dtype, trust_remote_code), rm_config)
    model.head.weight.data.copy_(load_file(os.path.join(path, HEAD_FILE))["weight"])
    return model.to(device).eval(), load_tokenizer(path, trust_remote_code)


def save_reward_model(model, tokenizer, out_dir, state_dict=None):
    """Hugging Face layout: backbone (config.json + safetensors), tokenizer, head and reward_config.json."""
    state_dict = state_dict if state_dict is not None else model.state_dict()
    backbone_state = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    os.makedirs(out_dir, exist_ok=True)
    model.backbone.save_pretrained(out_dir, state_dict=backbone_state)
    tokenizer.save_pretrained(out_dir)
    head = state_dict["head.weight"].detach().float().cpu().contiguous()
    save_file({"weight": head}, os.path.join(out_dir, HEAD_FILE))
    with open(os.path.join(out_dir, RM_CONFIG_FILE), "w") as f:
        json.dump({**model.rm_config, "template": PROMPT_TEMPLATE, "code_template": CODE_TEMPLATE}, f, indent=2)


# ----------------------------------------------------------------------------------------------------------------
# Tokenization and scoring


def encode(tokenizer, texts, max_length):
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None:
        ids = [seq if seq and seq[-1] == eos else seq + [eos] for seq in ids]
    return [seq[-max_length:] for seq in ids]


def collate(seqs, pad_id, device, pad_side="right"):
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        span = slice(0, len(seq)) if pad_side == "right" else slice(width - len(seq), width)
        input_ids[i, span] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, span] = 1
    return input_ids.to(device), attention_mask.to(device)


@torch.no_grad()
def score_texts(model, tokenizer, texts, batch_size=16, max_length=None, pad_side="right"):
    """Raw head outputs (fp32 tensor on CPU), texts batched longest first to meet an OOM at the start."""
    max_length = max_length or model.rm_config["max_length"]
    seqs = encode(tokenizer, texts, max_length) if texts else []
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = torch.zeros(len(seqs), dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, attention_mask = collate([seqs[i] for i in chunk], tokenizer.pad_token_id, device, pad_side)
        scores[chunk] = model(input_ids, attention_mask).float().cpu()
    model.train(was_training)
    return scores


def score(model, tokenizer, problems, reasonings, codes=None, batch_size=16):
    """R_proc for grpo.py: sigmoid of the head, one float in [0, 1] per (problem, reasoning[, code])."""
    if len(problems) != len(reasonings) or (codes is not None and len(codes) != len(problems)):
        raise ValueError(f"score: {len(problems)} problems, {len(reasonings)} reasonings"
                         + ("" if codes is None else f", {len(codes)} codes") + "; they must be the same length")
    include_code = model.rm_config["include_code"]
    if include_code and codes is None:
        raise ValueError("score: this reward model was trained with the code appended (--include-code); pass codes=")
    texts = [format_input(problem, reasoning, codes[i] if include_code else None)
             for i, (problem, reasoning) in enumerate(zip(problems, reasonings))]
    return torch.sigmoid(score_texts(model, tokenizer, texts, batch_size)).tolist()


# ----------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Group:
    """Every text and pair of one problem: texts are (reasoning, code); pairs are (chosen, rejected, type, gap)."""
    problem: str
    where: str
    texts: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    index: dict = field(default_factory=dict)

    def add_text(self, text):
        if text not in self.index:
            self.index[text] = len(self.texts)
            self.texts.append(text)
        return self.index[text]


def parse_variant(value, where, name):
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("reasoning"), str):
        code = value.get("code")
        if code is not None and not isinstance(code, str):
            raise ValueError(f"{where}: field {name!r}.code must be a string or null, got {type(code).__name__}")
        return value["reasoning"], code
    raise ValueError(f"{where}: field {name!r} must be a reasoning string or an object with a string 'reasoning' "
                     f"(and optional 'code'), got {type(value).__name__}")


def read_groups(paths):
    """CRPL records and pair rows from JSONL files -> list[Group], one per distinct problem, in file order."""
    groups, skipped = {}, 0
    for path in paths:
        for lineno, row in read_jsonl(path, numbered=True):
            where = f"{path}:{lineno}"
            problem = row.get("problem", row.get("prompt"))
            if not isinstance(problem, str):
                raise ValueError(f"{where}: needs a string field 'problem' (or 'prompt'); keys are {sorted(row)}")
            if any(name in row for name in VARIANT_LEVELS):
                variants = {name: parse_variant(row[name], where, name)
                            for name in VARIANT_LEVELS if row.get(name) is not None}
                pairs = [(variants[a], variants[b], f"{a}>{b}", VARIANT_LEVELS[a] - VARIANT_LEVELS[b])
                         for a, b in CRPL_PAIRS if a in variants and b in variants]
                if not pairs:  # synth.py may drop a variant; a record left with one has nothing to compare
                    skipped += 1
                    continue
            elif "chosen" in row and "rejected" in row:
                pair_type = row.get("pair_type") or row.get("subset") or "pairs"
                pairs = [(parse_variant(row["chosen"], where, "chosen"),
                          parse_variant(row["rejected"], where, "rejected"), str(pair_type), 1)]
            else:
                raise ValueError(f"{where}: neither a CRPL record (original/optimized/degraded) nor a pair "
                                 f"(chosen/rejected); keys are {sorted(row)}")
            group = groups.setdefault(problem, Group(problem, where))
            for chosen, rejected, pair_type, gap in pairs:
                group.pairs.append((group.add_text(chosen), group.add_text(rejected), pair_type, gap))
    if skipped:
        print(f"read_groups: skipped {skipped} CRPL records with fewer than two variants")
    if not groups:
        raise ValueError(f"{', '.join(paths)}: no preference pairs found")
    return list(groups.values())


def group_inputs(group, include_code):
    return [format_input(group.problem, reasoning, code if include_code else None) for reasoning, code in group.texts]


# ----------------------------------------------------------------------------------------------------------------
# Loss and evaluation


def bradley_terry_loss(r_chosen, r_rejected, margin=0.0, center_coef=0.0):
    """Per-pair loss -log sigmoid(r_c - r_r - margin) + center_coef * (r_c + r_r)^2 (average it over pairs).

    The centering term keeps scores near 0 (so sigmoid(score) is not pinned at 0 or 1) without changing the
    ordering; it is the one of Eisenstein et al., "Helping or Herding? Reward Model Ensembles Mitigate but do not
    Eliminate Reward Hacking" (arXiv 2312.09244), also TRL's center_rewards_coefficient (they suggest 0.01).
    The margin is Llama 2's (arXiv 2307.09288): the chosen text must win by at least `margin`.
    """
    return -F.logsigmoid(r_chosen - r_rejected - margin) + center_coef * (r_chosen + r_rejected) ** 2


def summarize_pairs(groups, scores):
    """Pairwise accuracy per pair type beside the "longer reasoning wins" baseline (characters of the reasoning).

    scores[g][i] is the raw head output of groups[g].texts[i]. A tie counts as wrong for both, as in RewardBench.
    """
    rows = {}
    for group, group_scores in zip(groups, scores):
        for chosen, rejected, pair_type, _ in group.pairs:
            correct = float(group_scores[chosen]) > float(group_scores[rejected])
            longer = len(group.texts[chosen][0]) > len(group.texts[rejected][0])
            for key in {pair_type, "all"}:
                row = rows.setdefault(key, {"pairs": 0, "acc": 0, "longer_wins": 0})
                row["pairs"] += 1
                row["acc"] += correct
                row["longer_wins"] += longer
    hep = [k for k in rows if k.startswith("hep-")]  # RewardBench's six code subsets, reported together too
    if hep:
        rows["hep-* (code)"] = {m: sum(rows[k][m] for k in hep) for m in ("pairs", "acc", "longer_wins")}
    for row in rows.values():
        row["acc"] /= row["pairs"]
        row["longer_wins"] /= row["pairs"]
    return dict(sorted(rows.items(), key=lambda kv: (kv[0] == "all", kv[0])))


def evaluate(model, tokenizer, groups, batch_size=16, max_length=None):
    include_code = model.rm_config["include_code"]
    texts = [text for group in groups for text in group_inputs(group, include_code)]
    flat = score_texts(model, tokenizer, texts, batch_size, max_length).tolist()
    scores, start = [], 0
    for group in groups:
        scores.append(flat[start:start + len(group.texts)])
        start += len(group.texts)
    return summarize_pairs(groups, scores), scores


def print_summary(name, summary):
    print(f"\n{name}\n{'pair type / subset':<28}{'pairs':>7}{'RM acc':>9}{'longer-wins':>13}")
    for key, row in summary.items():
        print(f"{key:<28}{row['pairs']:>7}{row['acc']:>9.3f}{row['longer_wins']:>13.3f}")


# ----------------------------------------------------------------------------------------------------------------
# Trainer plumbing shared with grpo.py (which imports it from here): processes, schedule, packing, the model
# wrappers, metrics, and the checkpoint group below.


def setup_distributed(use_cuda=None):
    """(rank, world, device). Under torchrun: join the process group once (NCCL on GPUs, gloo on CPU)."""
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


def lr_multiplier(schedule, step, total_steps, warmup_steps):
    """Linear warmup, then constant, linear or cosine decay to 0 (--lr-schedule of both trainers)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    done = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return {"constant": 1.0, "linear": 1.0 - done, "cosine": 0.5 * (1.0 + math.cos(math.pi * done))}[schedule]


def pack_by_budget(ids, lengths, token_budget):
    """ids packed in order into micro-batches while rows x longest row fits token_budget; lengths[i] lists the row
    lengths of id i (one sequence, or a reward-model group kept whole). An id that alone exceeds it goes alone."""
    micro, current, n_rows, longest = [], [], 0, 0
    for i in ids:
        rows, top = len(lengths[i]), max(lengths[i])
        if current and (n_rows + rows) * max(longest, top) > token_budget:
            micro.append(current)
            current, n_rows, longest = [], 0, 0
        current.append(i)
        n_rows, longest = n_rows + rows, max(longest, top)
    return micro + [current] if current else micro


def enable_grad_ckpt(model):
    """Non-reentrant activation checkpointing under either transformers name (5.x renamed it; the old one warns)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def shard_layers(root, model, mp_policy, mesh=None):
    """FSDP2: shard every decoder layer of `model` (its _no_split_modules classes), then `root`. Returns the
    number of layers sharded (0: the model names no layer class, only the root is sharded)."""
    from torch.distributed.fsdp import fully_shard
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp_policy)
    fully_shard(root, mesh=mesh, mp_policy=mp_policy)
    return len(layers)


def truncate_metrics(path, step):
    """On resume: keep the lines of metrics.jsonl up to the checkpoint's step; the run logs the later ones again."""
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(kept)


# Checkpoints: OUT/step_000100/ with trainer_state.pt written last. A save fills OUT/.tmp_step_000100/, flushes it to
# disk and renames it, so a kill or a host crash mid-save leaves the previous checkpoint the newest one. An old one is
# renamed to OUT/.trash_step_*/ before it is deleted: a half-deleted directory is never a step_* no listing sees.

def list_checkpoints(out):
    """Complete checkpoints (those with a trainer_state.pt) of a run directory, oldest first by step number."""
    if not os.path.isdir(out):
        return []
    names = [n for n in os.listdir(out) if n.startswith("step_") and n[5:].isdigit()]
    return [os.path.join(out, n) for n in sorted(names, key=lambda n: int(n[5:]))
            if os.path.isfile(os.path.join(out, n, TRAINER_STATE_FILE))]


def latest_checkpoint(out):
    found = list_checkpoints(out)
    return found[-1] if found else None


def checkpoint_paths(out, step):
    """(temporary directory, final directory) of the save of a step."""
    return os.path.join(out, f".tmp_step_{step:06d}"), os.path.join(out, f"step_{step:06d}")


def begin_checkpoint(out, step):
    """checkpoint_paths, with the temporary directory emptied of an earlier killed try (rank 0 only)."""
    tmp, final = checkpoint_paths(out, step)
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp, final


def fsync(path):
    """Flush a file's data, or a directory's entries, to disk: a rename alone can reach the disk before them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(tmp, final, out, keep):
    """The last act of a save (rank 0), after trainer_state.pt: everything flushed, the atomic rename, the rename
    flushed, then all but the newest `keep` checkpoints go."""
    for name in os.listdir(tmp):
        fsync(os.path.join(tmp, name))
    fsync(tmp)
    if os.path.isdir(final):  # the same step saved again after a resume
        remove_checkpoint(final)
    os.replace(tmp, final)  # atomic: a kill before this line leaves the previous checkpoint as the newest
    fsync(out)
    for old in list_checkpoints(out)[:-keep]:
        remove_checkpoint(old)


def remove_checkpoint(path):
    """Out of the step_* namespace in one atomic rename, then deleted: a kill mid-delete leaves a .trash_* directory
    that the next start sweeps. The rename is flushed first, so a host crash cannot undo it under a half-deleted
    directory."""
    out, name = os.path.split(path)
    trash = os.path.join(out, ".trash_" + name)
    shutil.rmtree(trash, ignore_errors=True)  # a leftover of the same name would make the rename fail
    os.replace(path, trash)
    fsync(out)
    shutil.rmtree(trash)


def sweep_checkpoints(out):
    """At start (rank 0): remove what killed saves and deletions left, the temporary and trash directories, and the
    incomplete step_* directories older than the newest complete checkpoint (half deleted: nothing can resume
    from them and no save replaces them). .corrupt_* directories stay for someone to look at."""
    if not os.path.isdir(out):
        return
    newest = latest_checkpoint(out)
    newest_step = int(os.path.basename(newest)[5:]) if newest else -1
    swept = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        half_deleted = (name.startswith("step_") and name[5:].isdigit() and int(name[5:]) < newest_step
                        and not os.path.isfile(os.path.join(path, TRAINER_STATE_FILE)))
        if half_deleted or name.startswith((".tmp_step_", ".trash_step_")):
            shutil.rmtree(path, ignore_errors=True)
            swept.append(name + (" (incomplete)" if half_deleted else ""))
    if swept:
        print(f"{out}: removed the leftovers of interrupted saves and deletions: {', '.join(swept)}")


def unreadable_file(path):
    """'file (error)' for the first file of checkpoint `path` that does not load, or None. Weights and optimizer
    state are opened by mmap, which reads their headers and indexes only, so checking costs little at any size;
    a truncated or empty file, what a crash of the host can leave, fails here."""
    file = path
    try:
        for name in sorted(os.listdir(path)):
            file = os.path.join(path, name)
            if name.endswith(".pt"):
                torch.load(file, mmap=True, weights_only=False)
            elif name.endswith(".safetensors"):
                with safe_open(file, "pt"):
                    pass
            elif name.endswith(".json"):
                with open(file) as f:
                    json.load(f)
    except Exception as e:  # any failure to load is a corrupt checkpoint, whatever the library raises
        return f"{file} ({type(e).__name__}: {' '.join(str(e).split())[:100]})"
    return None


def resume_checkpoint(out, rank=0):
    """The newest checkpoint of `out` whose files all load, or None if it has no complete one. Each newer corrupt
    one is named in a line and moved to .corrupt_step_* (rank 0), out of the --keep count and the next resume's
    way. If none loads, the run stops with one line and moves nothing: never a silent start from scratch."""
    checkpoints, corrupt = list_checkpoints(out), []
    while checkpoints and (bad := unreadable_file(checkpoints[-1])):
        corrupt.append((checkpoints.pop(), bad))
    if corrupt and not checkpoints:
        fail(f"--resume: no checkpoint in {out} loads: {'; '.join(bad for _, bad in corrupt)}")
    for path, bad in corrupt if rank == 0 else []:
        aside = os.path.join(out, ".corrupt_" + os.path.basename(path))
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        print(f"--resume: {bad} does not load; moved {path} to {aside}, resuming from {checkpoints[-1]}",
              file=sys.stderr)
    return checkpoints[-1] if checkpoints else None


# ----------------------------------------------------------------------------------------------------------------
# The reward model's checkpoints: the model (HF format + head), optimizer.pt, run_config.json, trainer_state.pt


def save_checkpoint(args, raw_model, tokenizer, optimizer, step, n_groups, rank, distributed, fsdp):
    if fsdp:  # collectives: every rank takes part, rank 0 gets full tensors
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(raw_model, options=options)
        optimizer_state = get_optimizer_state_dict(raw_model, optimizer, options=options)
    else:
        model_state, optimizer_state = raw_model.state_dict(), optimizer.state_dict()
    if rank == 0:
        tmp, final = begin_checkpoint(args.out, step)
        save_reward_model(raw_model, tokenizer, tmp, model_state)
        torch.save(optimizer_state, os.path.join(tmp, OPTIMIZER_FILE))
        rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
        torch.save({"step": step, "n_groups": n_groups, "rng": rng}, os.path.join(tmp, TRAINER_STATE_FILE))
        with open(os.path.join(tmp, RUN_CONFIG_FILE), "w") as f:
            json.dump(vars(args), f, indent=2)
        commit_checkpoint(tmp, final, args.out, args.keep)
    if distributed:
        dist.barrier()


def load_optimizer_state(path, raw_model, optimizer, rank, fsdp):
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        state = torch.load(os.path.join(path, OPTIMIZER_FILE), weights_only=False) if rank == 0 else {}
        set_optimizer_state_dict(raw_model, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    else:
        optimizer.load_state_dict(torch.load(os.path.join(path, OPTIMIZER_FILE), weights_only=False))


# ----------------------------------------------------------------------------------------------------------------
# Training


def batch_indices(n_groups, batch_size, seed, step):
    """The global batch of a step: a fixed permutation per epoch, so the step alone is the data position."""
    steps_per_epoch = n_groups // batch_size
    epoch, k = divmod(step, steps_per_epoch)
    order = torch.randperm(n_groups, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return epoch, order[k * batch_size:(k + 1) * batch_size]


def micro_batch_pairs(micro, groups, token_ids, pair_types):
    """The token sequences of a micro-batch's groups, and its pairs as indices into them."""
    seqs, pairs = [], []
    for g in micro:
        pairs += [(len(seqs) + c, len(seqs) + r, gap, pair_types.index(t)) for c, r, t, gap in groups[g].pairs]
        seqs += token_ids[g]
    chosen, rejected, gaps, types = map(list, zip(*pairs))
    return seqs, chosen, rejected, gaps, types


def train(args):
    """Train the reward model on args.data (CRPL records or pairs) with the Bradley-Terry loss; checkpoints and
    metrics.jsonl in args.out. One process, or torchrun with DDP / FSDP2 (--parallel)."""
    rank, world, device = setup_distributed(use_cuda=torch.cuda.is_available() and args.device != "cpu")
    distributed = dist.is_initialized()
    fsdp = distributed and args.parallel == "fsdp"
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    if rank == 0:
        print(json.dumps({**vars(args), "world_size": world, "device": str(device), "bf16": bf16}, indent=2))
        sweep_checkpoints(args.out)
    groups, total_steps, resume_from, state = check_run(args, world, fsdp and device.type == "cpu" and bf16)
    start_step = state["step"] if state else 0
    raw_model, model, tokenizer, optimizer = build(args, resume_from, state, device, world, distributed, fsdp, bf16)
    # bf16 for DDP / one process comes from autocast over fp32 master weights; FSDP2 casts through its policy
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and not fsdp else nullcontext()

    # Every rank tokenizes every group: the micro-batch plans of all ranks are then known without communication.
    token_ids = [encode(tokenizer, group_inputs(group, args.include_code), args.max_length) for group in groups]
    lengths = [[len(seq) for seq in seqs] for seqs in token_ids]
    pair_types = sorted({p[2] for g in groups for p in g.pairs})
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        truncate_metrics(metrics_path, start_step)
    eval_groups = {path: read_groups([path]) for path in args.eval_data}

    progress = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, disable=rank != 0)
    for step in progress:
        t0 = time.time()
        lr = args.lr * lr_multiplier(args.lr_schedule, step, total_steps, args.warmup_steps)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        epoch, batch = batch_indices(len(groups), args.batch_size, args.seed, step)
        sums = train_step(args, model, raw_model, optimizer, autocast, batch, groups, token_ids, lengths, pair_types,
                          tokenizer.pad_token_id, rank, world, device, distributed, fsdp)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.max_grad_norm or float("inf"))
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if distributed:
            reduced = sums.to(device)
            dist.all_reduce(reduced)
            sums = reduced.cpu()
        record = step_metrics(args, sums, pair_types, step, epoch, lr, grad_norm, time.time() - t0)
        if eval_groups and ((args.eval_every and (step + 1) % args.eval_every == 0) or step + 1 == total_steps):
            with autocast:  # every rank scores every pair: FSDP's forward is collective
                for path, eval_set in eval_groups.items():
                    summary, _ = evaluate(raw_model, tokenizer, eval_set, args.eval_batch_size)
                    record.update({f"eval/{os.path.basename(path)}/{k}/acc": v["acc"] for k, v in summary.items()})
                    if rank == 0:
                        print_summary(f"step {step + 1}: {path}", summary)
        if rank == 0:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            progress.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['acc']:.3f}")
        if (step + 1) % args.save_every == 0 or step + 1 == total_steps:
            save_checkpoint(args, raw_model, tokenizer, optimizer, step + 1, len(groups), rank, distributed, fsdp)


def check_run(args, world, cpu_bf16_fsdp):
    """Every check before a model is loaded: (groups, total steps, checkpoint to resume from, its trainer state)."""
    if args.batch_size < world:
        raise ValueError(f"--batch-size {args.batch_size} (problems per step) must be >= the number of ranks {world}")
    if cpu_bf16_fsdp:
        raise ValueError("--precision bf16 with FSDP needs CUDA; use --precision fp32 on CPU")
    groups = read_groups(args.data)
    if len(groups) < args.batch_size:
        raise ValueError(f"{args.data}: {len(groups)} problems, fewer than --batch-size {args.batch_size}")
    total_steps = args.steps if args.steps > 0 else math.ceil(args.epochs * (len(groups) // args.batch_size))
    resume_from = resume_checkpoint(args.out, int(os.environ.get("RANK", 0))) if args.resume else None
    if not args.resume and list_checkpoints(args.out):
        raise ValueError(f"{args.out} already has checkpoints; pass --resume or choose another --out")
    state = None
    if resume_from:
        state = torch.load(os.path.join(resume_from, TRAINER_STATE_FILE), weights_only=False)
        with open(os.path.join(resume_from, RUN_CONFIG_FILE)) as f:
            saved = json.load(f)
        # the step is the data position: with other data or batches it would point at other problems
        if state["n_groups"] != len(groups):
            raise ValueError(f"{resume_from}: trained on {state['n_groups']} problems, --data has {len(groups)}")
        changed = ["--" + k.replace("_", "-") for k in ("batch_size", "seed", "include_code", "max_length")
                   if saved[k] != getattr(args, k)]
        if changed:
            raise ValueError(f"{resume_from}: resume with the run's own {', '.join(changed)}")
    elif not args.model:
        raise ValueError(f"--resume: no checkpoint in {args.out} and no --model to start from")
    elif args.resume and int(os.environ.get("RANK", 0)) == 0:
        print(f"--resume: no checkpoint in {args.out}, starting from {args.model}")
    return groups, total_steps, resume_from, state


def build(args, resume_from, state, device, world, distributed, fsdp, bf16):
    """(raw model, the module to call, tokenizer, optimizer): the base model or the checkpoint, wrapped.
    DDP keeps a full fp32 replica per rank; FSDP2 shards every decoder layer and the rest."""
    source = resume_from or args.model
    torch.manual_seed(args.seed)  # the same head init on every rank (FSDP does not broadcast it)
    tokenizer = load_tokenizer(source, args.trust_remote_code)
    raw_model = RewardModel(load_backbone(source, torch.float32, args.trust_remote_code),
                            {"include_code": args.include_code, "max_length": args.max_length})
    if resume_from:
        raw_model.head.weight.data.copy_(load_file(os.path.join(resume_from, HEAD_FILE))["weight"])
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
    if args.grad_ckpt:
        enable_grad_ckpt(raw_model.backbone)
    raw_model.train()
    model = raw_model
    if distributed and args.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(raw_model.to(device),
                                        device_ids=[device.index] if device.type == "cuda" else None)
    elif fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
        shard_layers(raw_model, raw_model.backbone, policy, init_device_mesh(device.type, (world,)))
    else:
        raw_model.to(device)
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2),
                                  weight_decay=args.weight_decay)
    if resume_from:
        load_optimizer_state(resume_from, raw_model, optimizer, dist.get_rank() if distributed else 0, fsdp)
    return raw_model, model, tokenizer, optimizer


def train_step(args, model, raw_model, optimizer, autocast, batch, groups, token_ids, lengths, pair_types, pad_id,
               rank, world, device, distributed, fsdp):
    """Forward and backward over this rank's micro-batches of the step's groups; returns this rank's sums: loss,
    centering term, correct, pairs, rewards, rewards^2, texts, tokens, then (correct, pairs) per pair type."""
    global_pairs = sum(len(groups[g].pairs) for g in batch)
    plans = [pack_by_budget(batch[r::world], lengths, args.token_budget) for r in range(world)]
    n_micro = max(len(p) for p in plans)  # FSDP gathers weights in every forward: all ranks run n_micro
    sums = torch.zeros(8 + 2 * len(pair_types), dtype=torch.float64)
    for m in range(n_micro):
        dummy = m >= len(plans[rank])  # a rank short of micro-batches reruns its first one, weighted 0
        seqs, chosen, rejected, gaps, types = micro_batch_pairs(plans[rank][0 if dummy else m], groups,
                                                                token_ids, pair_types)
        input_ids, attention_mask = collate(seqs, pad_id, device)
        last = m == n_micro - 1
        sync = model.no_sync() if distributed and not fsdp and not last else nullcontext()
        if fsdp:
            model.set_requires_gradient_sync(last)
        with sync:
            with autocast:
                rewards = model(input_ids, attention_mask)
            r_c, r_r = rewards[chosen], rewards[rejected]
            margin = args.margin * torch.tensor(gaps, dtype=torch.float32, device=device)  # x level gap
            pair_loss = bradley_terry_loss(r_c, r_r, margin, args.center_coef)
            # normalised by the global pair count; x world undoes the gradient averaging of DDP / FSDP
            (pair_loss.sum() * (world / global_pairs) * (0.0 if dummy else 1.0)).backward()
        if dummy:
            continue
        correct = (r_c > r_r).double().cpu()
        type_ids = torch.tensor(types)
        sums[:8] += torch.tensor([pair_loss.sum().item(), ((r_c + r_r) ** 2).sum().item(), correct.sum().item(),
                                  len(chosen), rewards.sum().item(), (rewards ** 2).sum().item(), len(seqs),
                                  attention_mask.sum().item()], dtype=torch.float64)
        sums[8::2] += torch.zeros(len(pair_types), dtype=torch.float64).index_add_(0, type_ids, correct)
        sums[9::2] += torch.bincount(type_ids, minlength=len(pair_types)).double()
    return sums


def step_metrics(args, sums, pair_types, step, epoch, lr, grad_norm, step_time):
    """One metrics.jsonl line from the step's sums over all ranks."""
    loss_sum, center_sum, correct_sum, pairs, r_sum, r2_sum, n_texts, tokens = sums[:8].tolist()
    reward_mean = r_sum / n_texts
    return {"step": step + 1, "epoch": epoch, "loss": loss_sum / pairs,
            "bt_loss": (loss_sum - args.center_coef * center_sum) / pairs, "center": center_sum / pairs,
            "acc": correct_sum / pairs,
            **{f"acc/{t}": sums[8 + 2 * i].item() / max(1.0, sums[9 + 2 * i].item()) for i, t in enumerate(pair_types)},
            "reward_mean": reward_mean, "reward_std": math.sqrt(max(0.0, r2_sum / n_texts - reward_mean ** 2)),
            "lr": lr, "grad_norm": float(grad_norm), "pairs": int(pairs), "tokens": int(tokens),
            "step_time": step_time, "tokens_per_s": tokens / step_time}


# ----------------------------------------------------------------------------------------------------------------
# Command line


def eval_main(args):
    model, tokenizer = load_reward_model(args.rm, device=args.device, dtype=args.dtype,
                                         trust_remote_code=args.trust_remote_code)
    print(json.dumps({**vars(args), "rm_config": model.rm_config}, indent=2))
    results = {}
    for path in args.data:
        groups = read_groups([path])
        summary, scores = evaluate(model, tokenizer, groups, args.batch_size, args.max_length)
        print_summary(path, summary)
        results[path] = {"summary": summary, "pairs": [
            {"problem_at": g.where, "type": t, "chosen_score": s[c], "rejected_score": s[r]}
            for g, s in zip(groups, scores) for c, r, t, _ in g.pairs]}
    print("\n(longer-wins: accuracy of picking the text with the longer reasoning; length is the known confound)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a reward model on CRPL records or pair files")
    t.add_argument("--data", nargs="+", required=True, help="JSONL files of CRPL records and/or pairs")
    t.add_argument("--model", help="base model: hub id or local directory (a causal LM)")
    t.add_argument("--out", default="runs/rm", help="run directory: step_*/ checkpoints and metrics.jsonl")
    t.add_argument("--include-code", action="store_true", help="append the code to the reasoning in the input")
    t.add_argument("--max-length", type=int, default=4096, help="tokens per text; longer texts are cut on the left")
    t.add_argument("--batch-size", type=int, default=32, help="problems per optimizer step, over all ranks")
    t.add_argument("--token-budget", type=int, default=16384, help="padded tokens per micro-batch on one rank")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--steps", type=int, default=0, help="optimizer steps; 0: from --epochs")
    t.add_argument("--lr", type=float, default=2e-6)
    t.add_argument("--lr-schedule", default="cosine", choices=["constant", "linear", "cosine"])
    t.add_argument("--warmup-steps", type=int, default=0, help="optimizer steps of linear warmup")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--beta1", type=float, default=0.9)
    t.add_argument("--beta2", type=float, default=0.95)
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    t.add_argument("--margin", type=float, default=0.0, help="BT margin per quality level (optimized>degraded: 2x)")
    t.add_argument("--center-coef", type=float, default=0.0, help="reward-centering coefficient (0.01 is usual)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"], help="under torchrun; fsdp shards")
    t.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on GPU")
    t.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=True, help="gradient checkpointing")
    t.add_argument("--device", default=None, help="cpu: ignore GPUs")
    t.add_argument("--trust-remote-code", action="store_true")
    t.add_argument("--save-every", type=int, default=200, help="steps between checkpoints (and one at the end)")
    t.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--eval-data", nargs="*", default=[], help="pair files evaluated every --eval-every steps")
    t.add_argument("--eval-every", type=int, default=0, help="0: evaluate --eval-data at the end only")
    t.add_argument("--eval-batch-size", type=int, default=16)
    e = sub.add_parser("eval", help="pairwise accuracy on LCB-RB / RewardBench / CRPL files")
    e.add_argument("--rm", required=True, help="reward model directory or training run directory")
    e.add_argument("--data", nargs="+", required=True)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-length", type=int, default=None, help="default: the model's training max length")
    e.add_argument("--device", default=None)
    e.add_argument("--dtype", choices=["bf16", "fp32", "fp16"], default=None, help="default: bf16 on GPU, else fp32")
    e.add_argument("--out", default=None, help="write the summaries and every pair's scores as JSON")
    e.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "train" and not args.model and not args.resume:
        parser.error("train needs --model (or --resume of an existing run)")
    return args


def main(argv=None):
    """The command line. train() leaves the process group up, so that a caller (the toy world) can go on using it;
    the command is over here, and takes it down."""
    args = parse_args(argv)
    result = train(args) if args.command == "train" else eval_main(args)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError) as e:  # a bad flag or data file, named with its path:line: one line
        fail(e)
