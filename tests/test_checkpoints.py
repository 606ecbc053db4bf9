"""
Checkpoints of both trainers (grpo.py SFT, reward.py) under kill -9 and corruption, on CPU with a tiny model:
a run killed at each phase of a save, the deletion of an old checkpoint included, resumes to weights bit-identical
to an uninterrupted run with --keep checkpoints and no leftovers; a truncated checkpoint file is named and the run
falls back to the previous checkpoint, or stops in one line when none loads.

    python -m pytest -q tests/test_checkpoints.py
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import grpo  # noqa: E402
import reward  # noqa: E402
from synth import tiny_model, train_tiny_tokenizer  # noqa: E402

STEPS, KEEP = 4, 2  # a save every step: the save of step 3 deletes step 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    corpus = ["Problem: add two numbers. Reasoning: add them.", "def add(a, b):\n    return a + b"] * 20
    tokenizer = train_tiny_tokenizer(corpus, vocab_size=300)
    tiny_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def sft_run(model_dir, tmp):
    """run(out, *flags) for grpo.py's SFT on four add problems."""
    reference = {"reasoning": "add the two numbers", "code": "def add(a, b):\n    return a + b"}
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write add{i}.", "reference": reference, "tests": {
        "type": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}]}}) + "\n" for i in range(4)))
    return lambda out, *flags: grpo.train(grpo.parse_args([
        "--model", model_dir, "--data", str(data), "--out", str(out), "--algo", "sft", "--reward", "outcome",
        "--prompt-format", "raw", "--batch-size", "2", "--lr", "1e-2", "--steps", str(STEPS), "--save-every", "1",
        "--keep", str(KEEP), *flags]))


def reward_run(model_dir, tmp):
    """run(out, *flags) for reward.py's training on six CRPL records (two steps an epoch)."""
    data = tmp / "crpl.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{k}", "problem": f"Problem {k}: add two numbers.", **{
        name: {"reasoning": f"{name} reasoning {k}", "code": f"x = {k}"}
        for name in ("original", "optimized", "degraded")}}) + "\n" for k in range(6)))
    return lambda out, *flags: reward.main([
        "train", "--data", str(data), "--model", model_dir, "--out", str(out), "--max-length", "64",
        "--no-grad-ckpt", "--batch-size", "3", "--lr", "1e-3", "--steps", str(STEPS), "--save-every", "1",
        "--keep", str(KEEP), *flags])


@pytest.fixture(scope="module", params=["grpo-sft", "reward"])
def trainer(request, model_dir, tmp_path_factory):
    """(run, the run directory of an uninterrupted run), on one thread: tiny models gain nothing from more, and the
    forked children of the kill tests then stay clear of a thread pool they cannot use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp(request.param)
    run = (sft_run if request.param == "grpo-sft" else reward_run)(model_dir, tmp)
    run(tmp / "whole")
    yield run, tmp / "whole"
    torch.set_num_threads(threads)


def weights(checkpoint):
    return {name: tensor for file in sorted(Path(checkpoint).glob("*.safetensors")) for name, tensor in
            load_file(str(file)).items()}


def assert_ends_like(out, whole):
    """--keep step directories, nothing else left, the last one bit-identical to the uninterrupted run's."""
    steps = [f"step_{s:06d}" for s in range(STEPS - KEEP + 1, STEPS + 1)]
    assert sorted(n for n in os.listdir(out) if n.startswith(("step_", ".tmp", ".trash"))) == steps
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl")] == list(range(1, STEPS + 1))
    ours, theirs = weights(out / steps[-1]), weights(whole / steps[-1])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


# ---------------------------------------------------------------------------------------------------------------
# kill -9 at each phase of the save of step 3 (which deletes step 1)


def kill_points(out):
    """name: (module, function, which of its calls count, the count at which the process is killed, what the kill
    leaves outside the step_* namespace)."""
    tmp3, step1, step3, trash1 = (os.path.join(out, n) for n in (".tmp_step_000003", "step_000001", "step_000003",
                                                                 ".trash_step_000001"))
    return {
        "before optimizer.pt": (torch, "save", lambda *a: a[1] == os.path.join(tmp3, "optimizer.pt"), 1, [tmp3]),
        "before trainer_state.pt": (torch, "save", lambda *a: a[1] == os.path.join(tmp3, "trainer_state.pt"), 1,
                                    [tmp3]),
        "amid the flush of the files": (os, "fsync", lambda *a: os.path.isdir(tmp3), 3, [tmp3]),
        "before the rename into step_000003": (os, "replace", lambda *a: a[1] == step3, 1, [tmp3]),
        "before the flush of the rename": (os, "fsync", lambda *a: os.path.isdir(step3) and os.path.isdir(step1), 1, []),
        "before step_000001 goes to trash": (os, "replace", lambda *a: a[1] == trash1, 1, []),
        "amid the deletion of step_000001": (os, "unlink", lambda *a: os.path.isdir(step3), 3, [trash1]),
    }


def run_killed(run, out, module, name, counts, nth):
    """run(out) in a forked child that SIGKILLs itself at the nth call of module.name that `counts`."""
    pid = os.fork()
    if pid == 0:
        try:
            real, seen = getattr(module, name), []

            def dying(*args, **kwargs):
                if counts(*args):
                    seen.append(1)
                    if len(seen) == nth:
                        os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            setattr(module, name, dying)
            run(out)
        except BaseException:
            traceback.print_exc()
        os._exit(1)  # the kill point was never reached
    assert os.waitpid(pid, 0)[1] == signal.SIGKILL


@pytest.mark.parametrize("phase", list(kill_points("")))
def test_a_kill_at_any_phase_of_a_save_resumes_to_the_same_weights(trainer, tmp_path, phase, capsys):
    run, whole = trainer
    out = tmp_path / "run"
    *kill, leftovers = kill_points(str(out))[phase]
    run_killed(run, out, *kill)
    # what a kill leaves: every step_* directory is a whole checkpoint, the rest is outside the step_* namespace
    left = sorted(os.listdir(out))
    for name in (n for n in left if n.startswith("step_")):
        assert sorted(os.listdir(out / name)) == sorted(os.listdir(whole / "step_000004")), name
    assert [str(out / n) for n in left if n.startswith((".tmp", ".trash"))] == leftovers
    capsys.readouterr()
    run(out, "--resume")
    swept = [line for line in capsys.readouterr().out.splitlines() if "removed the leftovers" in line]
    names = ", ".join(os.path.basename(n) for n in leftovers)
    assert swept == ([f"{out}: removed the leftovers of interrupted saves and deletions: {names}"] if leftovers else [])
    assert_ends_like(out, whole)


# ---------------------------------------------------------------------------------------------------------------
# A truncated file in the newest checkpoint: named, set aside, and the run falls back to the one before


def interrupted_copy(whole, out):
    """The uninterrupted run's last two checkpoints and metrics, as a run killed at its end would have left them."""
    for name in ("step_000003", "step_000004", "metrics.jsonl"):
        (shutil.copytree if name.startswith("step_") else shutil.copy)(whole / name, out / name)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("file", ["trainer_state.pt", "model.safetensors", "optimizer.pt", "config.json"])
def test_a_corrupt_checkpoint_file_falls_back_to_the_previous_checkpoint(trainer, tmp_path, file, capfd):
    run, whole = trainer
    out = tmp_path / "run"
    out.mkdir()
    interrupted_copy(whole, out)
    truncate(out / "step_000004" / file)
    shutil.copytree(out / "step_000003", out / "step_000001")  # a half-deleted checkpoint older than the newest
    os.remove(out / "step_000001" / "trainer_state.pt")
    capfd.readouterr()
    run(out, "--resume")
    printed = capfd.readouterr()
    assert "removed the leftovers of interrupted saves and deletions: step_000001 (incomplete)" in printed.out
    [fallback] = [line for line in printed.err.splitlines() if line.startswith("--resume:")]
    assert f"{out / 'step_000004' / file} (" in fallback and f"resuming from {out / 'step_000003'}" in fallback
    assert sorted(os.listdir(out / ".corrupt_step_000004")) == sorted(os.listdir(whole / "step_000004"))
    assert_ends_like(out, whole)


def test_no_loadable_checkpoint_stops_in_one_line_and_moves_nothing(trainer, tmp_path):
    run, whole = trainer
    out = tmp_path / "run"
    out.mkdir()
    interrupted_copy(whole, out)
    truncate(out / "step_000004" / "model.safetensors")
    truncate(out / "step_000003" / "trainer_state.pt")

    def checkpoints():
        return sorted(n for n in os.listdir(out) if n.startswith(("step_", ".")))

    before = checkpoints()
    with pytest.raises(SystemExit) as stop:
        run(out, "--resume")
    message = str(stop.value)
    assert "no checkpoint" in message and "\n" not in message
    assert str(out / "step_000004" / "model.safetensors") in message
    assert str(out / "step_000003" / "trainer_state.pt") in message
    assert checkpoints() == before


def test_no_loadable_checkpoint_at_the_command_line_is_one_line_without_traceback(tmp_path):
    """reward.py's command line; grpo.py stops through the same resume_checkpoint (the SystemExit above)."""
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"problem": "p", "chosen": "a", "rejected": "b"}) + "\n")
    for step in ("step_000001", "step_000002"):
        (tmp_path / "run" / step).mkdir(parents=True)
        (tmp_path / "run" / step / "trainer_state.pt").write_bytes(b"")  # what a host crash can leave
    done = subprocess.run([sys.executable, str(ROOT / "reward.py"), "train", "--data", str(data), "--batch-size", "1",
                           "--out", str(tmp_path / "run"), "--resume"], capture_output=True, text=True, timeout=300)
    error = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert error.startswith("reward.py: error: --resume: no checkpoint in")
    assert f"{tmp_path / 'run' / 'step_000002' / 'trainer_state.pt'} (" in error
