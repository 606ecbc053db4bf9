"""Tests for reward.py on CPU with tiny models built from a config and a tokenizer trained here.

Run: .venv/bin/python -m pytest -x -q tests/test_reward.py
"""

import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import reward  # noqa: E402

WORDS = ["scan", "the", "array", "keep", "a", "running", "sum", "compare", "with", "target", "update", "answer",
         "loop", "over", "index", "value", "bound", "edge", "case", "sort", "pairs", "count", "left", "right"]


def make_reasoning(rng, flawed):
    """Steps of filler words, each closed by a check; a flawed reasoning has one failed check at a random step.
    "ok" and "no" have the same length and step counts are drawn independently, so length cannot tell them apart."""
    n_steps = rng.randint(2, 5)
    bad = rng.randrange(n_steps) if flawed else -1
    steps = []
    for i in range(n_steps):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        steps.append(f"Step {i + 1}: {words}. Check: {'no' if i == bad else 'ok'}.")
    return "\n".join(steps)


def make_problem(rng, k):
    return f"Task {k}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def make_pairs(n, seed):
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        chosen, rejected = make_reasoning(rng, False), make_reasoning(rng, True)
        if k % 3 == 0:  # the object form of LCB-RB rows
            chosen, rejected = {"reasoning": chosen, "code": "print(1)"}, {"reasoning": rejected, "code": "print(2)"}
        rows.append({"problem": make_problem(rng, f"{seed}-{k}"), "chosen": chosen, "rejected": rejected})
    return rows


def make_crpl(n, seed):
    rng = random.Random(seed)
    return [{"id": f"p{k}", "problem": make_problem(rng, k),
             **{name: {"reasoning": make_reasoning(rng, name != "optimized"), "code": f"x = {k}"}
                for name in ("original", "optimized", "degraded")}} for k in range(n)]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def build_base_model(out_dir, arch="llama"):
    """A byte-level BPE tokenizer trained on synthetic text and a ~0.1M-parameter causal LM, saved HF-style."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                              PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

    rng = random.Random(0)
    corpus = [reward.format_input(make_problem(rng, k), make_reasoning(rng, k % 2 == 0), "x = 1") for k in range(200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=384, special_tokens=["<pad>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(0)
    vocab = len(tokenizer)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=512))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=512))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=512))
    model.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine its spin-waits cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_base_model(tmp_path_factory.mktemp("base"))


def train_cli(data, base, out, *extra):
    return ["train", "--data", data, "--model", base, "--out", str(out), "--max-length", "256", "--no-grad-ckpt",
            *map(str, extra)]


def checkpoint_tensors(path):
    tensors = {f"head.{k}": v for k, v in load_file(os.path.join(path, reward.HEAD_FILE)).items()}
    tensors.update(load_file(os.path.join(path, "model.safetensors")))
    return tensors


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------------------------------------
# Loss


def test_bradley_terry_loss_matches_hand_computed_values():
    r_chosen, r_rejected = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    # -log sigmoid(x) = log(1 + exp(-x)): x = 1 -> 0.3132617, x = -1 -> 1.3132617
    plain = reward.bradley_terry_loss(r_chosen, r_rejected)
    assert torch.allclose(plain, torch.tensor([0.3132617, 1.3132617]), atol=1e-6)
    # margin 0.5: x = 0.5 -> 0.4740770, x = -1.5 -> 1.7014132; centering 0.1 * (r_c + r_r)^2 = 0.1 * [1, 0]
    full = reward.bradley_terry_loss(r_chosen, r_rejected, margin=0.5, center_coef=0.1)
    assert torch.allclose(full, torch.tensor([0.4740770 + 0.1, 1.7014132]), atol=1e-6)
    assert abs(full.mean().item() - (0.5740770 + 1.7014132) / 2) < 1e-6


def test_training_loss_of_first_step_matches_scores_of_initial_model(base_dir, tmp_path):
    """The loop's loss = mean over all pair types of BT with level-gap margins plus centering, on the first batch."""
    data = write_jsonl(tmp_path / "crpl.jsonl", make_crpl(5, seed=3))
    out = tmp_path / "run"
    reward.main(train_cli(data, base_dir, out, "--batch-size", 5, "--steps", 1, "--lr", 1e-3, "--margin", 0.3,
                          "--center-coef", 0.05, "--token-budget", 300))
    first = read_metrics(out)[0]

    torch.manual_seed(0)  # train() seeds with --seed (0) right before building the head
    tokenizer = reward.load_tokenizer(base_dir)
    model = reward.RewardModel(reward.load_backbone(base_dir), {"include_code": False, "max_length": 256})
    expected, pairs = 0.0, 0
    for group in reward.read_groups([data]):
        scores = reward.score_texts(model, tokenizer, reward.group_inputs(group, False))
        for c, r, pair_type, gap in group.pairs:
            assert gap == (2 if pair_type == "optimized>degraded" else 1)
            delta = scores[c].item() - scores[r].item() - 0.3 * gap
            expected += math.log1p(math.exp(-delta)) + 0.05 * (scores[c].item() + scores[r].item()) ** 2
            pairs += 1
    assert first["pairs"] == pairs == 15
    assert abs(first["loss"] - expected / pairs) < 1e-5
    assert set(first) >= {"acc/optimized>original", "acc/original>degraded", "acc/optimized>degraded", "grad_norm"}


# ----------------------------------------------------------------------------------------------------------------
# Data and evaluation


def test_read_groups_forms_crpl_pairs_and_groups_rows_by_problem(tmp_path):
    rows = make_crpl(2, seed=0)
    rows[1]["degraded"] = None  # synth.py dropped it: one pair left
    rows.append({"id": "x", "problem": "lonely", "original": {"reasoning": "r", "code": None}})
    pairs = [{"prompt": rows[0]["problem"], "chosen": "a", "rejected": "b", "subset": "extra"},
             {"prompt": rows[0]["problem"], "chosen": "a", "rejected": "c", "subset": "extra"}]
    groups = reward.read_groups([write_jsonl(tmp_path / "a.jsonl", rows), write_jsonl(tmp_path / "b.jsonl", pairs)])
    assert len(groups) == 2  # the record with one variant is skipped; pair rows join their problem's group
    assert [p[2] for p in groups[0].pairs] == ["optimized>original", "original>degraded", "optimized>degraded",
                                              "extra", "extra"]
    assert len(groups[0].texts) == 3 + 3  # "a" is scored once
    assert [p[2] for p in groups[1].pairs] == ["optimized>original"]


@pytest.mark.parametrize("line, message", [
    ('{"problem": "p", "chosen": "a", "rejected": "b"}\n{"problem": "p", "chosen": ', "bad.jsonl:2: not valid JSON"),
    ('[1, 2]', "bad.jsonl:1: expected a JSON object"),
    ('{"chosen": "a", "rejected": "b"}', "bad.jsonl:1: needs a string field 'problem'"),
    ('{"problem": "p", "chosen": 3, "rejected": "b"}', "bad.jsonl:1: field 'chosen' must be"),
    ('{"problem": "p", "original": {"reasoning": "a", "code": 1}, "degraded": "b"}',
     "bad.jsonl:1: field 'original'.code"),
    ('{"problem": "p", "answer": "a"}', "bad.jsonl:1: neither a CRPL record"),
])
def test_bad_input_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        reward.read_groups([str(path)])


def test_summary_counts_ties_as_wrong_and_computes_longer_wins():
    group = reward.Group("p", "f:1")
    short, mid, long_ = (group.add_text((text, None)) for text in ("ab", "abcd", "abcdef"))
    other = group.add_text(("wxyz", None))  # as long as mid
    group.pairs = [(long_, short, "t1", 1),   # RM right, longer chosen
                   (short, mid, "t1", 1),     # RM tie -> wrong, shorter chosen
                   (mid, other, "t2", 1)]     # RM right, equal length -> longer-wins counts it wrong
    scores = [[0.0] * 4]
    scores[0][long_], scores[0][short], scores[0][mid], scores[0][other] = 2.0, 1.0, 1.0, -1.0
    summary = reward.summarize_pairs([group], scores)
    assert summary["t1"] == {"pairs": 2, "acc": 0.5, "longer_wins": 0.5}
    assert summary["t2"] == {"pairs": 1, "acc": 1.0, "longer_wins": 0.0}
    assert summary["all"] == {"pairs": 3, "acc": 2 / 3, "longer_wins": 1 / 3}
    assert list(summary)[-1] == "all"


def test_identical_texts_tie_and_count_wrong_end_to_end(base_dir, tmp_path):
    rows = [{"problem": "p", "chosen": "same steps", "rejected": "same steps"},
            {"problem": "q", "chosen": "x", "rejected": {"reasoning": "x", "code": None}}]
    torch.manual_seed(0)
    model = reward.RewardModel(reward.load_backbone(base_dir), {"include_code": False, "max_length": 64})
    summary, scores = reward.evaluate(model, reward.load_tokenizer(base_dir),
                                      reward.read_groups([write_jsonl(tmp_path / "tie.jsonl", rows)]))
    assert summary["pairs"] == {"pairs": 2, "acc": 0.0, "longer_wins": 0.0}


# ----------------------------------------------------------------------------------------------------------------
# Model: padding, save and load, score()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_left_and_right_padding_give_the_scores_of_unpadded_inputs(tmp_path, arch):
    base = build_base_model(tmp_path / arch, arch)
    torch.manual_seed(0)
    model = reward.RewardModel(reward.load_backbone(base), {"include_code": False, "max_length": 256})
    tokenizer = reward.load_tokenizer(base)
    rng = random.Random(5)
    texts = [reward.format_input(make_problem(rng, k), make_reasoning(rng, k % 2 == 1)) for k in range(6)]
    alone = reward.score_texts(model, tokenizer, texts, batch_size=1)
    right = reward.score_texts(model, tokenizer, texts, batch_size=6, pad_side="right")
    left = reward.score_texts(model, tokenizer, texts, batch_size=6, pad_side="left")
    assert alone.std() > 1e-4  # the texts really get different scores
    assert torch.allclose(right, alone, atol=1e-5) and torch.allclose(left, alone, atol=1e-5)


def test_save_and_load_give_identical_scores(base_dir, tmp_path):
    torch.manual_seed(1)
    model = reward.RewardModel(reward.load_backbone(base_dir), {"include_code": True, "max_length": 128})
    tokenizer = reward.load_tokenizer(base_dir)
    rng = random.Random(7)
    problems = [make_problem(rng, k) for k in range(5)]
    reasonings = [make_reasoning(rng, k % 2 == 0) for k in range(5)]
    codes = [f"print({k})" for k in range(5)]
    before = reward.score(model, tokenizer, problems, reasonings, codes, batch_size=2)
    reward.save_reward_model(model, tokenizer, tmp_path / "rm")
    assert {"config.json", "model.safetensors", reward.HEAD_FILE, reward.RM_CONFIG_FILE, "tokenizer.json"} <= set(
        os.listdir(tmp_path / "rm"))
    loaded, loaded_tokenizer = reward.load_reward_model(str(tmp_path / "rm"), device="cpu")
    after = reward.score(loaded, loaded_tokenizer, problems, reasonings, codes, batch_size=2)
    assert after == before
    assert all(0.0 < s < 1.0 for s in after)
    # the code is part of the input of an --include-code model, and score() insists on it
    assert reward.score(loaded, loaded_tokenizer, problems, reasonings, ["pass"] * 5) != before
    with pytest.raises(ValueError, match="include-code"):
        reward.score(loaded, loaded_tokenizer, problems, reasonings)
    with pytest.raises(ValueError, match="same length"):
        reward.score(loaded, loaded_tokenizer, problems, reasonings[:2], codes)
    with pytest.raises(FileNotFoundError, match="not a reward model"):
        reward.load_reward_model(str(tmp_path), device="cpu")


# ----------------------------------------------------------------------------------------------------------------
# Training


def test_tiny_model_learns_a_preference_length_cannot_explain(base_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_pairs(320, seed=1))
    held = make_pairs(150, seed=2)
    lcb_rb = write_jsonl(tmp_path / "lcb_rb.jsonl", held)
    subsets = ["hep-python", "hep-js", "math-prm"]
    def text(side):  # RewardBench responses are plain strings
        return side if isinstance(side, str) else side["reasoning"]
    rewardbench = write_jsonl(tmp_path / "rb.jsonl", [
        {"prompt": row["problem"], "chosen": text(row["chosen"]), "rejected": text(row["rejected"]),
         "subset": subsets[k % 3]} for k, row in enumerate(held)])
    out = tmp_path / "run"
    reward.main(train_cli(train, base_dir, out, "--batch-size", 16, "--steps", 40, "--lr", 3e-3, "--warmup-steps", 4,
                          "--save-every", 100))
    results = reward.main(["eval", "--rm", str(out), "--data", lcb_rb, rewardbench, "--out", str(tmp_path / "r.json")])
    lcb = results[lcb_rb]["summary"]["all"]
    assert lcb["pairs"] == 150 and lcb["acc"] >= 0.9
    assert 0.3 <= lcb["longer_wins"] <= 0.7  # length alone does not solve it
    rb = results[rewardbench]["summary"]
    assert set(rb) == {*subsets, "hep-* (code)", "all"} and rb["hep-* (code)"]["pairs"] == 100
    assert rb["all"]["acc"] >= 0.9
    with open(tmp_path / "r.json") as f:
        assert len(json.load(f)[rewardbench]["pairs"]) == 150


def test_resume_continues_with_the_same_step_and_data(base_dir, tmp_path):
    data = write_jsonl(tmp_path / "crpl.jsonl", make_crpl(9, seed=4))
    args = ("--batch-size", 3, "--steps", 5, "--lr", 1e-3, "--save-every", 2, "--keep", 5)  # 3 steps/epoch
    full = tmp_path / "full"
    reward.main(train_cli(data, base_dir, full, *args))
    assert [os.path.basename(p) for p in reward.list_checkpoints(str(full))] == [
        "step_000002", "step_000004", "step_000005"]
    with pytest.raises(ValueError, match="--resume"):
        reward.main(train_cli(data, base_dir, full, *args))  # never clobbers a run

    # An interrupted run: checkpoint 2 and a save that was killed half way.
    part = tmp_path / "part"
    shutil.copytree(full / "step_000002", part / "step_000002")
    (part / ".tmp_step_00004").mkdir()
    (part / ".tmp_step_00004" / "config.json").write_text("{half")
    with pytest.raises(ValueError, match="--batch-size"):
        reward.main(train_cli(data, base_dir, part, *args, "--resume", "--batch-size", 4))
    reward.main(train_cli(data, base_dir, part, *args, "--resume"))
    assert not (part / ".tmp_step_00004").exists()
    resumed = read_metrics(part)
    assert [m["step"] for m in resumed] == [3, 4, 5] and [m["epoch"] for m in resumed] == [0, 1, 1]
    for mine, theirs in zip(resumed, read_metrics(full)[2:]):
        assert mine["loss"] == theirs["loss"] and mine["lr"] == theirs["lr"]
    a, b = checkpoint_tensors(full / "step_000005"), checkpoint_tensors(part / "step_000005")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(base_dir, tmp_path, parallel):
    data = write_jsonl(tmp_path / "crpl.jsonl", make_crpl(10, seed=6))
    # 5 problems per step: ranks get 3 and 2, in several micro-batches (an uneven split on purpose)
    args = ("--batch-size", 5, "--lr", 1e-3, "--token-budget", 400, "--center-coef", 0.01, "--parallel", parallel)
    reward.main(train_cli(data, base_dir, tmp_path / "one", *args, "--steps", 2))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    # The FSDP run stops after step 1 and resumes (optimizer state gathered from the shards, then broadcast);
    # the lr of step 1 does not depend on the total, so this is the same run as one of 2 steps.
    launches = [["--steps", "1"], ["--steps", "2", "--resume"]] if parallel == "fsdp" else [["--steps", "2"]]
    for extra in launches:
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              os.path.join(ROOT, "reward.py"), *train_cli(data, base_dir, tmp_path / "two", *args),
                              *extra], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [m["step"] for m in two] == [1, 2]
    assert [m["pairs"] for m in two] == [m["pairs"] for m in one] == [15, 15]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5
    a, b = checkpoint_tensors(tmp_path / "one" / "step_000002"), checkpoint_tensors(tmp_path / "two" / "step_000002")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    start = load_file(os.path.join(base_dir, "model.safetensors"))
    moved = max((a[k] - start["model." + k]).abs().max().item() for k in a if "model." + k in start)
    assert moved > 1e-4  # two steps really changed the weights, so the match above means something


def test_gradient_checkpointing_gives_the_same_update(base_dir, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "crpl.jsonl", make_crpl(4, seed=8))
    layer_calls = []
    load_backbone = reward.load_backbone

    def counting_load_backbone(*args, **kwargs):  # counts MLP calls: checkpointing recomputes them
        backbone = load_backbone(*args, **kwargs)
        for layer in backbone.layers:
            layer.mlp.register_forward_pre_hook(lambda *_: layer_calls.append(1))
        return backbone

    monkeypatch.setattr(reward, "load_backbone", counting_load_backbone)
    calls = {}
    for name, extra in (("plain", []), ("ckpt", ["--grad-ckpt"])):
        layer_calls.clear()
        reward.main(train_cli(data, base_dir, tmp_path / name, "--batch-size", 4, "--steps", 2, "--lr", 1e-3, *extra))
        calls[name] = len(layer_calls)
    assert calls["ckpt"] == 2 * calls["plain"] > 0
    a = checkpoint_tensors(tmp_path / "plain" / "step_000002")
    b = checkpoint_tensors(tmp_path / "ckpt" / "step_000002")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
