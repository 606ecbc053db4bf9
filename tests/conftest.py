"""
Fixtures shared by tests/test_grpo.py and tests/test_grpo_options.py: a tiny random Qwen2 policy with a tokenizer
trained here (no downloads), and a file of problems of the 'even' task (test_grpo.even_outcome).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from synth import tiny_model, train_tiny_tokenizer  # noqa: E402

CORPUS = ["<think>\nadd the two numbers\n</think>\n<answer>\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>",
          "Write a function add(a, b) that returns the sum of a and b.", "say something nice"] * 30


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A model directory no test writes into: built once for the session."""
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = train_tiny_tokenizer(CORPUS, vocab_size=300)
    tiny_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def even_data(tmp_path):
    from test_grpo import register_even_task, write_jsonl
    register_even_task()
    return write_jsonl(tmp_path / "even.jsonl", [{"task_id": f"e{i}", "prompt": f"say something {i}", "task": "even"}
                                                 for i in range(4)])
