"""Tests for execute.py: verdicts for each test kind, comparison rules, bad input, and an adversarial corpus.

The corpus runs in a throwaway PID namespace of its own (`unshare --pid --fork`), so that a program escaping the
sandbox while the runner is being changed kills only that namespace, never the shell or CI running the tests:

    python -m pytest -q tests/test_execute.py
    python tests/test_execute.py --corpus      # the corpus alone, printing one JSON report (used by the test)
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import execute  # noqa: E402

ADD_TESTS = {"type": "assert", "program": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
                                          "    assert candidate(-1, 1) == 0\n\ncheck(add)\n"}
RIGHT_ADD = "def add(a, b):\n    return a + b\n"


def run(code, tests, **kw):
    kw.setdefault("timeout", 2.0)
    return execute.run_jobs([{"id": 0, "code": code, "tests": tests}], workers=2, **kw)[0]


# ---- verdicts per kind: right, wrong, crashing, slow, non-terminating ------------------------------------------

def test_assert_verdicts():
    assert run(RIGHT_ADD, ADD_TESTS)["status"] == "passed"
    wrong = run("def add(a, b):\n    return a - b\n", ADD_TESTS)
    assert wrong["status"] == "failed" and "assert candidate(1, 2) == 3" in wrong["detail"]
    assert run("def add(a, b):\n    return a / 0\n", ADD_TESTS)["status"] == "runtime_error"
    assert run("def add(a, b)\n    return a\n", ADD_TESTS)["status"] == "syntax_error"
    slow = "import time\ndef add(a, b):\n    time.sleep(0.5)\n    return a + b\n"
    assert run(slow, ADD_TESTS)["status"] == "passed"
    assert run("while True:\n    pass\n", ADD_TESTS, timeout=1.0)["status"] == "timeout"
    assert run("x = bytearray(1 << 33)\n" + RIGHT_ADD, ADD_TESTS)["status"] == "memory"


def test_stdio_verdicts_and_real_stdin():
    tests = {"type": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}]}
    assert run("a, b = map(int, input().split())\nprint(a + b)\n", tests)["status"] == "passed"
    # the idioms that stdin mocks break: iteration, sys.stdin.buffer, sys.exit(0) after printing
    assert run("import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)\n",
               tests)["status"] == "passed"
    assert run("import sys\na, b = map(int, sys.stdin.buffer.readline().split())\nprint(a + b)\nsys.exit(0)\n",
               tests)["status"] == "passed"
    wrong = run("a, b = map(int, input().split())\nprint(a * b)\n", tests)
    assert wrong["status"] == "failed" and wrong["passed"] == 0 and wrong["total"] == 2
    assert run("print(int(input().split()[0]) // 0)\n", tests)["status"] == "runtime_error"
    assert run("import sys\nsys.exit(3)\n", tests)["status"] == "runtime_error"
    assert run("while True:\n    pass\n", tests, timeout=0.5)["status"] == "timeout"


def test_stdio_comparison_rule():
    assert execute.stdout_matches("  3 \n4\n\n", "3\n4")
    assert execute.stdout_matches("1.50 2", "1.5 2")            # token-wise exact decimals, as LiveCodeBench
    assert not execute.stdout_matches("1.5000001", "1.5")
    assert execute.stdout_matches("1.5000001", "1.5", atol=1e-6)
    assert not execute.stdout_matches("3\n4", "3 4")
    assert not execute.stdout_matches("YES", "yes")


def test_call_verdicts_fail_fast_and_record_mode():
    tests = {"type": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 2}, {"args": [2], "expected": 5},
                                                      {"args": [3], "expected": 4}]}
    r = run("def f(x):\n    return x + 1\n", tests)
    assert (r["status"], r["passed"], r["total"]) == ("failed", 2, 3)
    r = run("def f(x):\n    return x + 1\n", tests, fail_fast=True)
    assert (r["status"], r["passed"]) == ("failed", 1)
    assert run("def f(x):\n    return 1 / 0\n", tests)["status"] == "runtime_error"
    assert run("def f(x):\n    while True: pass\n", tests, timeout=0.5)["status"] == "timeout"
    # LeetCode style, args as a Python literal (tuples and sets survive), record mode returns plain outputs
    rec = {"type": "call", "fn_name": "g", "cases": [{"args_py": "[(1, 2), {3}]"}]}
    r = run("class Solution:\n    def g(self, t, s):\n        return (type(t).__name__, sorted(s), {2, 1})\n", rec)
    assert r["status"] == "passed" and r["outputs"] == [["tuple", [3], [1, 2]]]
    floats = {"type": "call", "fn_name": "h", "cases": [{"args": [], "expected": 0.3}], "atol": 1e-9}
    assert run("def h():\n    return 0.1 + 0.2\n", floats)["status"] == "passed"
    assert run("def h():\n    return 0.1 + 0.2\n", dict(floats, atol=0))["status"] == "failed"


def test_call_expected_values_never_enter_the_child():
    tests = {"type": "call", "fn_name": "f", "cases": [{"args": [1], "expected": "zebra-7781"}]}
    spy = ("import gc, sys\n"
           "def f(x):\n"
           "    for o in gc.get_objects():\n"
           "        for v in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()):\n"
           "            if isinstance(v, str) and v.startswith('zebra-') and v != 'zebra-':\n"
           "                return v\n"
           "    return 'not found'\n")
    r = run(spy, tests)
    assert r["status"] == "failed" and "not found" in r["detail"]


def test_call_never_asks_the_program_whether_it_is_equal():
    tests = {"type": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 2}]}
    hack = "class A(int):\n    def __eq__(self, o): return True\ndef f(x):\n    return A(7)\n"
    r = run(hack, tests)     # shipped as its plain value, 7, and compared here
    assert r["status"] == "failed" and "got 7" in r["detail"]
    custom = "class A:\n    def __eq__(self, o): return True\ndef f(x):\n    return A()\n"
    r = run(custom, tests)
    assert r["status"] == "runtime_error" and "not plain data" in r["detail"]


def test_plain_equal():
    assert execute.plain_equal([1, [2.0, "a"]], [1, [2, "a"]])
    assert not execute.plain_equal(True, 1)        # JSON true and 1 are different answers
    assert not execute.plain_equal([1, 2], [1, 2, 3])
    assert execute.plain_equal({"a": 1.0000001}, {"a": 1.0}, atol=1e-6)
    assert not execute.plain_equal({"a": 1.1}, {"a": 1.0}, atol=1e-6)


def test_evalplus_rule_differs_from_plain_data_in_both_directions():
    """Each way EvalPlus's `out == exp`, then np.allclose, differs from comparing JSON-plain data (to_plain)."""
    big = 4 * 3.14159 * 1e6 ** 3 / 3
    differ = [  # (output, expected, atol, EvalPlus's verdict); plain data says the opposite
        (1, True, 0, True), (True, 1, 0, True),                  # 1 == True: plain data tells them apart
        ((1, 2), [1, 2], 0, False), ([1, 2], (1, 2), 0, False),  # JSON makes both lists
        ({"1": 2}, {1: 2}, 0, False), ({1: 2}, {"1": 2}, 0, False),   # JSON makes every key a string
        ({1, 2}, [1, 2], 0, False), ([1, 2], {1, 2}, 0, False),       # to_plain sorts a set into a list
        (big * (1 + 1e-10), big, 1e-6, True), ([big * (1 + 1e-10)], [big], 1e-6, True),   # rtol 1e-7
        (3.0000001, 3, 1e-6, False), (3, 3.0000001, 1e-6, False),     # the fallback wants the same type
        ({"a": 1.0}, {"a": 1.0000001}, 1e-6, False),                  # np.allclose refuses dicts
    ]
    agree = [(float(10 ** 17 + 1), 10 ** 17 + 1, 0, False), (10 ** 17, 1e17, 0, True), ([1.0, 2.0], [1.0], 1e-6, False),
             ("ab", "ab ", 1e-6, False), (1.0000001, 1.0, 1e-6, True), (1.5, 1.0, 1e-6, False)]
    for out, exp, atol, verdict in differ + agree:
        assert execute.evalplus_equal(out, exp, atol) is verdict, (out, exp)
        plain = execute.plain_equal(json.loads(json.dumps(execute.to_plain(out))), execute.to_plain(exp), atol)
        assert plain is (not verdict if (out, exp, atol, verdict) in differ else verdict), (out, exp)
    assert execute.evalplus_atol(0, [1.0, 2.0]) == 1e-6 and execute.evalplus_atol(0, [1.0, 2]) == 0
    assert execute.evalplus_atol(0.5, 3) == 0.5


def evalplus_spec(fn_name, cases, compare="evalplus", **extra):
    encode = execute.encode if compare == "evalplus" else execute.to_plain
    return {"type": "call", "fn_name": fn_name, "compare": compare, **extra,
            "cases": [{"args": args, "expected": encode(e)} for args, e in cases]}


def test_call_tests_compare_evalplus_way_or_as_plain_data():
    """Hand-made samples, one per difference, through the sandbox with both comparisons (one batch of jobs)."""
    samples = [  # (code, [(args, expected)], passes EvalPlus's way, passes as plain data)
        ("def f(x):\n    return x & 1\n", [([3], True), ([4], False)], True, False),     # MBPP find_Parity
        ("def f(x):\n    return bool(x & 1)\n", [([3], 1)], True, False),
        ("def f(x):\n    return (x, x)\n", [([1], [1, 1])], False, True),
        ("def f(x):\n    return [x, x]\n", [([1], (1, 1))], False, True),
        ("def f(x):\n    return {str(x): x}\n", [([1], {1: 1})], False, True),
        ("def f(x):\n    return {1, x}\n", [([2], [1, 2])], False, True),
        ("def f(r):\n    return (4 / 3) * 3.14159 * r * r * r\n", [([1e6], 4 * 3.14159 * 1e6 ** 3 / 3)], True, False),
        ("def f(x):\n    return x + 1e-7\n", [([1.5], 1.5), ([3], 3)], False, True),    # float for an int
    ]
    # EvalPlus's task atol is 0 and it raises it itself; plain data gets the group's 1e-6 (synth.py's lenient spec)
    jobs = [{"id": (i, compare), "code": code, "tests": evalplus_spec("f", cases, compare,
                                                                    atol=0 if compare == "evalplus" else 1e-6)}
            for i, (code, cases, _, _) in enumerate(samples) for compare in ("evalplus", "plain")]
    # EvalPlus raises a zero atol at the first float-valued expected output, for the inputs from there on
    sticky = [([1], [1, 3])], [([0], 1.5)]
    code = "def f(x):\n    return 1.5 if x == 0 else [1, 3.0000001]\n"
    jobs += [{"id": "float first", "code": code, "tests": evalplus_spec("f", sticky[1] + sticky[0])},
             {"id": "float later", "code": code, "tests": evalplus_spec("f", sticky[0] + sticky[1])}]
    results = {r["id"]: r for r in execute.run_jobs(jobs, workers=2, timeout=5.0)}
    for i, (code, _, evalplus, plain) in enumerate(samples):
        assert (results[i, "evalplus"]["status"] == "passed") is evalplus, (code, results[i, "evalplus"])
        assert (results[i, "plain"]["status"] == "passed") is plain, (code, results[i, "plain"])
    assert results["float first"]["status"] == "passed" and results["float later"]["status"] == "failed"
    recorded = execute.run_jobs([{"id": 0, "code": "def f(x):\n    return (x, {x: [1.0]})\n", "tests": {
        "type": "call", "fn_name": "f", "compare": "evalplus", "cases": [{"args": [2]}]}}], workers=1)[0]
    assert recorded["outputs"] == [["T", 2, ["D", 2, ["L", 1.0]]]]      # record mode keeps the types


def test_a_program_cannot_forge_a_typed_answer():
    """Typed answers written straight onto the answer pipe: only what the strict decoder accepts is an answer, and
    anything malformed or oversized is the program's failure (never a pass, never a harness error)."""
    forged = [b'["R", ["S", ["L", 1]], []]', b'["R", ["I", "' + b"f" * (1 << 21) + b'"], []]',
              b'["R", ["O", 0, "T"], []]',
              b'["R", ["T", 1, 2, []]', b'["R", ["X", 1, 2], []]', b'["R", {"T": [1, 2]}, []]', b'["R", ["D", 1], []]',
              b'["R", ' + b'["T", ' * 150 + b'1' + b']' * 150 + b', []]']
    jobs = []
    for i, body in enumerate(forged):
        code = (f"import os, struct\nBODY = {body!r}\ndef f(x):\n    os.write(5, struct.pack('<Q', len(BODY)) + BODY)\n"
                f"    os._exit(0)\n")
        jobs.append({"id": i, "code": code, "tests": evalplus_spec("f", [([1], (1, 2))])})
    oversized = "import os, struct\ndef f(x):\n    os.write(5, struct.pack('<Q', 1 << 40))\n    os._exit(0)\n"
    for name, code in (("oversized", oversized), ("control", "def f(x):\n    return (1, 2)\n")):
        jobs.append({"id": name, "code": code, "tests": evalplus_spec("f", [([1], (1, 2))])})
    for r in execute.run_jobs(jobs, workers=2, timeout=5.0):
        assert r["status"] == "passed" if r["id"] == "control" else r["status"] in ("failed", "runtime_error"), r


def test_evalplus_specs_are_checked_and_the_sample_cap_holds():
    bad = execute.validate_job({"code": "", "tests": {"type": "call", "fn_name": "f", "compare": "evalplus",
                                                      "cases": [{"args": [], "expected": {"a": 1}}]}})
    assert "typed value" in bad
    assert "compare" in execute.validate_job({"code": "", "tests": evalplus_spec("f", [([], 1)], "exact")})
    assert "sample_timeout" in execute.validate_job({"code": "", "tests": evalplus_spec("f", [([], 1)],
                                                                                         sample_timeout=0)})
    code = "import time\ndef f(x):\n    time.sleep(0.4)\n    return x\n"
    cases = [([i], i) for i in range(3)]
    capped, free = execute.run_jobs([{"id": 0, "code": code, "tests": evalplus_spec("f", cases, sample_timeout=0.7)},
                                     {"id": 1, "code": code, "tests": evalplus_spec("f", cases)}], workers=2)
    assert capped["status"] == "timeout" and "all cases together" in capped["detail"] and capped["passed"] < 3
    assert free["status"] == "passed"


def test_unittest_verdicts():
    program = ("import unittest\nclass TestCases(unittest.TestCase):\n"
               "    def test_one(self):\n        self.assertEqual(task_func(1), 2)\n"
               "    def test_two(self):\n        self.assertEqual(task_func(2), 3)\n")
    tests = {"type": "unittest", "program": program}
    assert run("def task_func(x):\n    return x + 1\n", tests)["status"] == "passed"
    r = run("def task_func(x):\n    return 2\n", tests)
    assert (r["status"], r["passed"], r["total"]) == ("failed", 1, 2)
    r = run("def task_func(x):\n    raise KeyError(x)\n", tests)
    assert r["status"] == "runtime_error" and r["passed"] == 0


def test_a_dead_sandbox_process_is_a_harness_error_and_is_replaced():
    pool = execute.start_pool(2)
    pool.zygotes[0].proc.kill()
    pool.zygotes[0].proc.wait()
    jobs = [{"id": i, "code": RIGHT_ADD, "tests": ADD_TESTS} for i in range(6)]
    statuses = [r["status"] for r in execute.run_jobs(jobs, workers=2)]
    assert statuses.count("harness_error") == 1 and statuses.count("passed") == 5
    assert all(z.proc.poll() is None for z in execute.start_pool(2).zygotes)


def test_isolation_is_reported():
    text = execute.isolation(2)
    assert "namespace" in text and "rlimits" in text


# ---- bad input ---------------------------------------------------------------------------------------------------

def test_cli_bad_lines_name_the_line_and_do_not_stop_other_jobs(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([
        json.dumps({"id": "a", "code": RIGHT_ADD, "tests": ADD_TESTS}),
        "{not json",
        json.dumps({"id": "c", "code": RIGHT_ADD, "tests": {"type": "fuzzy"}}),
        json.dumps({"id": "d", "code": RIGHT_ADD, "tests": {"type": "stdio", "cases": [{"input": 1}]}}),
        json.dumps({"id": "e", "code": "def add(a, b): return 0", "tests": ADD_TESTS}),
    ]) + "\n")
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "execute.py"), str(jobs), "--out", str(out),
                           "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == ["a", None, "c", "d", "e"]
    assert [r["status"] for r in results] == ["passed", "harness_error", "harness_error", "harness_error", "failed"]
    assert "jobs.jsonl:2: not valid JSON" in results[1]["detail"]
    assert "jobs.jsonl:3: unknown test type 'fuzzy'" in results[2]["detail"]
    assert "jobs.jsonl:4: stdio case 0 needs 'input' and 'output' strings" in results[3]["detail"]
    assert "jobs.jsonl:2" in proc.stderr


def test_api_bad_job_gets_a_result_naming_the_problem():
    results = execute.run_jobs([{"id": 1, "code": RIGHT_ADD}, {"id": 2, "code": RIGHT_ADD, "tests": ADD_TESTS}],
                               workers=1)
    assert results[0]["status"] == "harness_error" and "no 'tests' object" in results[0]["detail"]
    assert results[1]["status"] == "passed"


# ---- the adversarial corpus ---------------------------------------------------------------------------------------
# Each entry: name, program, allowed verdicts. Programs that probe for an escape are written so that a successful
# escape turns into a *passing* add(), so a leak shows up as a wrong verdict as well as a trace.

def corpus(canary_dir, port):
    escape = "def add(a, b):\n    return a + b\n"
    wrong = "def add(a, b):\n    return 0\n"
    probe = ("def add(a, b):\n    return a + b if ESCAPED else 0\n")
    return [
        ("fork_bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
         {"timeout"}),
        ("memory_bomb", "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))\n", {"memory"}),
        ("disk_fill_one_file", "with open('big', 'wb') as f:\n    f.write(b'0' * (1 << 30))\n" + escape,
         {"runtime_error", "memory"}),
        ("disk_fill_many_files", "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'0' * (8 << 20))\n"
                                 "    i += 1\n", {"runtime_error"}),
        ("busy_loop", "while True:\n    pass\n", {"timeout"}),
        ("sleep", "import time\ntime.sleep(60)\n", {"timeout"}),
        ("double_fork_setsid_daemon",
         "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1.5)\n"
         f"        open({canary_dir!r} + '/daemon', 'w').write('alive')\n    os._exit(0)\n" + escape, {"passed"}),
        ("sigterm_ignoring_child",
         "import os, signal, time\nif os.fork() == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         f"    time.sleep(1.5)\n    open({canary_dir!r} + '/sigterm', 'w').write('alive')\n    os._exit(0)\n"
         + escape, {"passed"}),
        ("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + escape,
         {"passed", "runtime_error"}),
        ("kill_minus_one", "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
         + escape, {"passed", "memory", "failed"}),
        ("reload_os_and_posix_kill",
         "import importlib, os, posix, signal\nimportlib.reload(os)\nfor pid in range(2, 400):\n    try:\n"
         "        posix.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n" + escape, {"passed"}),
        ("kill_everything_in_proc",
         "import os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
         "        try:\n            os.kill(int(p), signal.SIGKILL)\n        except OSError:\n            pass\n"
         + escape, {"passed"}),
        ("ctypes_segfault", "import ctypes\nctypes.string_at(0)\n" + escape, {"runtime_error"}),
        ("read_parent_environment",
         "import os\nESCAPED = 'RECODE_CANARY_SECRET' in str(os.environ)\nfor p in os.listdir('/proc'):\n"
         "    try:\n        ESCAPED |= b'RECODE_CANARY_SECRET' in open(f'/proc/{p}/environ', 'rb').read()\n"
         "    except OSError:\n        pass\n" + probe, {"failed"}),
        ("write_outside_cwd",
         "import os\nESCAPED = False\n"
         f"for path in [{canary_dir!r} + '/outside', '/var/tmp/recode-escape', {ROOT!r} + '/recode-escape',\n"
         "             '/run/lock/recode-escape', os.path.expanduser('~/../escape')]:\n"
         "    try:\n        open(path, 'w').write('x')\n        ESCAPED = True\n    except OSError:\n        pass\n"
         "for path in ['/tmp/recode-escape', '/dev/shm/recode-escape']:   # the run's own: must not reach the host\n"
         "    open(path, 'w').write('x')\n"
         + probe, {"failed"}),
        ("connect_to_loopback",
         f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    ESCAPED = True\n"
         "except OSError:\n    ESCAPED = False\n" + probe, {"failed"}),
        ("print_100mb", "import sys\nsys.stdout.write('x' * 100_000_000)\n" + escape, {"passed"}),
        ("close_fd_1_and_2", "import os\nos.close(1)\nos.close(2)\n" + escape, {"passed"}),
        ("read_stdin_when_none_given", "x = input()\n" + escape, {"runtime_error"}),
        ("deep_recursion", "import sys\nsys.setrecursionlimit(10 ** 7)\ndef r(n):\n    return r(n + 1) + 1\nr(0)\n"
         + escape, {"runtime_error", "memory", "timeout"}),   # 3.11 frames live on the heap: may just run long
        ("non_utf8_output", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80')\nsys.stdout.flush()\n"
         "sys.stderr.buffer.write(b'\\xc3\\x28')\n" + escape, {"passed"}),
        # the reward hacks: none may pass
        ("hack_sys_exit_0", "import sys\nsys.exit(0)\n" + wrong, {"runtime_error", "failed"}),
        ("hack_os_exit_0", "import os\nos._exit(0)\n" + wrong, {"failed"}),
        ("hack_always_equal", "class Eq:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                              "def add(a, b):\n    return Eq()\n", {"failed"}),
        ("hack_int_subclass_equal", "class I(int):\n    def __eq__(self, other):\n        return True\n"
                                    "def add(a, b):\n    return I(0)\n", {"failed"}),
        ("hack_borrowed_slot", "E = type('E', (int,), {'__eq__': int.__ne__})\ndef add(a, b):\n    return E(99)\n",
         {"failed"}),
        ("hack_fake_success_markers",
         "import os\nprint('passed')\nprint('{\"status\": \"passed\"}')\n"
         "os.write(3, b'00000000000000000000000000000000 done [\"passed\", 1, 1, \"\"]\\n')\nos._exit(0)\n",
         {"failed", "runtime_error"}),
        ("hack_redefine_test_helper", "def check(candidate):\n    pass\n" + wrong, {"failed"}),
        ("hack_patch_builtins_and_sys_modules",
         "import builtins, sys, types\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
         "fake = types.ModuleType('unittest')\nsys.modules['unittest'] = fake\n" + wrong, {"failed"}),
        ("hack_settrace_skips_asserts",
         "import sys\ndef tracer(frame, event, arg):\n    if frame.f_code.co_filename.startswith('<tests'):\n"
         "        frame.f_trace_lines = True\n        if event == 'line' and 'assert' in str(frame.f_lineno):\n"
         "            pass\n        return tracer\n    return tracer\n"
         "def jump(frame, event, arg):\n    if event == 'line' and frame.f_code.co_name == 'check':\n"
         "        try:\n            frame.f_lineno = frame.f_code.co_firstlineno + 3\n        except Exception:\n"
         "            pass\n    return jump\nsys.settrace(jump)\n" + wrong, {"failed"}),
        ("hack_background_thread_patches_later",
         "import threading, time, builtins\ndef later():\n    time.sleep(0.05)\n    builtins.len = lambda x: 0\n"
         "threading.Thread(target=later).start()\n" + wrong, {"runtime_error", "failed"}),
        ("hack_shadow_module_name",
         "import types\nmath = types.SimpleNamespace(isclose=lambda *a, **k: True)\n" + wrong, {"failed"}),
    ]


MATH_TESTS = {"type": "assert", "program": "import math\ndef check(candidate):\n"
                                           "    assert math.isclose(candidate(1, 2), 3)\n\ncheck(add)\n"}
UNITTEST_HACKS = [
    ("hack_patch_unittest_assertions",
     "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
     "unittest.TestCase.assertTrue = lambda *a, **k: None\ndef add(a, b):\n    return 0\n", {"failed"}),
    ("hack_fake_unittest_module",
     "import sys, types\nm = types.ModuleType('unittest')\nclass TestCase:\n    def assertEqual(self, *a): pass\n"
     "m.TestCase = TestCase\nm.main = lambda *a, **k: None\nsys.modules['unittest'] = m\n"
     "def add(a, b):\n    return 0\n", {"failed"}),
    ("hack_always_equal_in_unittest", "class Eq:\n    def __eq__(self, o):\n        return True\n"
                                      "def add(a, b):\n    return Eq()\n", {"failed"}),
]
UNITTEST_PROGRAM = ("import unittest\nclass TestCases(unittest.TestCase):\n    def test_add(self):\n"
                    "        self.assertEqual(add(1, 2), 3)\n        self.assertTrue(add(2, 2) == 4)\n")


def run_corpus():
    """Run the corpus here (meant to be PID 1 of a throwaway namespace) and return a JSON-able report."""
    os.environ["RECODE_CANARY_SECRET"] = "RECODE_CANARY_SECRET"
    canary_dir = tempfile.mkdtemp(prefix="recode-canary-")
    os.chmod(canary_dir, 0o1777)     # world-writable: a program running as another uid could write here
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    entries = corpus(canary_dir, port)
    jobs = [{"id": name, "code": code, "tests": ADD_TESTS} for name, code, _ in entries]
    jobs.append({"id": "hack_shadow_module_name_math", "code": entries[-1][1], "tests": MATH_TESTS})
    expected = {name: allowed for name, _, allowed in entries}
    expected["hack_shadow_module_name_math"] = {"failed"}
    for name, code, allowed in UNITTEST_HACKS:
        jobs.append({"id": name, "code": code, "tests": {"type": "unittest", "program": UNITTEST_PROGRAM}})
        expected[name] = allowed
    # well-behaved jobs interleaved with the bombs: one job's fork bomb must not starve the others
    for i in range(6):
        jobs.insert(2 * i + 1, {"id": f"bystander_{i}", "code": RIGHT_ADD, "tests": ADD_TESTS})
        expected[f"bystander_{i}"] = {"passed"}

    start = time.monotonic()
    results = execute.run_jobs(jobs, workers=2, timeout=3.0, memory_mb=512)
    elapsed = time.monotonic() - start
    time.sleep(2.0)   # give any survivor (the daemons sleep 1.5 s) the time to leave a trace
    pool = execute.start_pool(2)
    zygotes = {p.pid for z in pool.zygotes for p in (z.proc, z.judge)}
    me = os.getpid()
    survivors = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in zygotes | {me}:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                survivors.append(f"{entry}: {cmdline[:80]}")
            except OSError:
                pass
    files = sorted(os.listdir(canary_dir))
    files += [p for p in ("/tmp/recode-escape", "/var/tmp/recode-escape", "/dev/shm/recode-escape",
                          "/run/lock/recode-escape", os.path.join(ROOT, "recode-escape")) if os.path.exists(p)]
    connections = 0
    try:
        while True:
            listener.accept()[0].close()
            connections += 1
    except BlockingIOError:
        pass
    shutil.rmtree(canary_dir, ignore_errors=True)
    return {"results": results, "expected": {k: sorted(v) for k, v in expected.items()}, "survivors": survivors,
            "files": files, "connections": connections, "elapsed": elapsed, "isolation": pool.isolation}


def in_throwaway_pid_namespace(command, **kw):
    """Run command as PID 1 of a new PID namespace (as root, or else inside a new user namespace)."""
    proc = None
    for prefix in (["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
                   ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child"]):
        proc = subprocess.run(prefix + command, capture_output=True, text=True, **kw)
        if not proc.stderr.startswith("unshare:"):
            break
    return proc


def test_adversarial_corpus():
    """Every program gets its expected verdict and leaves no process, file or connection behind."""
    proc = in_throwaway_pid_namespace([sys.executable, os.path.abspath(__file__), "--corpus"], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = {r["id"]: (r["status"], r["detail"]) for r in report["results"]
             if r["status"] not in report["expected"][r["id"]]}
    assert not wrong, wrong
    assert all(r["status"] in execute.STATUSES for r in report["results"])
    assert len([r for r in report["results"] if not r["id"].startswith("bystander")]) >= 25
    assert report["survivors"] == [], report["survivors"]
    assert report["files"] == [], report["files"]
    assert report["connections"] == 0


if __name__ == "__main__" and "--corpus" in sys.argv:
    print(json.dumps(run_corpus()))


def run_minimal(script, timeout):
    """Run a Python script with RECODE_SANDBOX=minimal in a throwaway PID namespace; its last line of output, as
    JSON."""
    env = dict(os.environ, RECODE_SANDBOX="minimal")
    proc = in_throwaway_pid_namespace([sys.executable, "-c", script], timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_minimal_sandbox_still_sweeps_and_judges():
    """Without namespaces or a uid switch (a machine without privileges), the subreaper sweep still kills a
    setsid daemon, time limits hold, and the hacks still fail."""
    script = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "import execute\n"
        "daemon = ('import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    if os.fork() == 0:\\n'\n"
        "          '        time.sleep(30)\\n    os._exit(0)\\ndef add(a, b):\\n    return a + b\\n')\n"
        f"tests = {ADD_TESTS!r}\n"
        "jobs = [{'id': 'daemon', 'code': daemon, 'tests': tests},\n"
        "        {'id': 'loop', 'code': 'while True: pass', 'tests': tests},\n"
        "        {'id': 'exit', 'code': 'import os\\nos._exit(0)', 'tests': tests},\n"
        "        {'id': 'eq', 'code': 'class E:\\n    def __eq__(s, o): return True\\ndef add(a, b): return E()',\n"
        "         'tests': tests}]\n"
        "results = execute.run_jobs(jobs, workers=1, timeout=1.0)\n"
        "time.sleep(0.5)\n"
        "zygote = execute.start_pool(1).zygotes[0].proc.pid\n"
        "children = open(f'/proc/{zygote}/task/{zygote}/children').read().split()\n"
        "print(json.dumps({'statuses': [r['status'] for r in results], 'children': children,\n"
        "                  'isolation': execute.isolation(1)}))\n")
    report = run_minimal(script, timeout=120)
    assert report["statuses"] == ["passed", "timeout", "failed", "failed"]
    assert report["children"] == []
    assert "subreaper sweep" in report["isolation"] and "NETWORK NOT ISOLATED" in report["isolation"]


def test_outputs_the_json_encoder_cannot_carry():
    """Huge integers, Counter/OrderedDict/deque, and outputs too big to ship (compared by digest) all round-trip."""
    code = ("import collections\n"
            "def big(n):\n    return 7 ** n\n"
            "def counter(s):\n    return collections.Counter(s)\n"
            "def dq(n):\n    return collections.deque(range(n))\n"
            "def huge(n):\n    return [('abc', i) for i in range(n)]\n")
    def call(fn, args, expected=None):
        case = {"args": args} if expected is None else {"args": args, "expected": expected}
        return run(code, {"type": "call", "fn_name": fn, "cases": [case]}, timeout=20.0)
    recorded = call("big", [200_000])
    assert recorded["status"] == "passed" and set(recorded["outputs"][0]) == {"int_hex"}
    assert call("big", [200_000], recorded["outputs"][0])["status"] == "passed"
    assert call("big", [200_001], recorded["outputs"][0])["status"] == "failed"
    assert call("counter", ["abca"])["outputs"] == [{"a": 2, "b": 1, "c": 1}]
    assert call("dq", [3])["outputs"] == [[0, 1, 2]]
    huge = call("huge", [1_000_000])
    assert set(huge["outputs"][0]) == {"sha256", "json_bytes"} and huge["times"][0] >= 0
    assert call("huge", [1_000_000], huge["outputs"][0])["status"] == "passed"
    assert call("huge", [999_999], huge["outputs"][0])["status"] == "failed"


def test_per_case_timeouts():
    code = "import time\ndef f(s):\n    time.sleep(s)\n    return s\n"
    cases = [{"args": [0.0], "expected": 0.0}, {"args": [1.5], "expected": 1.5, "timeout": 3.0}]
    assert run(code, {"type": "call", "fn_name": "f", "cases": cases}, timeout=1.0)["status"] == "passed"
    cases[1]["timeout"] = 0.5
    r = run(code, {"type": "call", "fn_name": "f", "cases": cases}, timeout=10.0)
    assert (r["status"], r["passed"]) == ("timeout", 1)


def test_library_objects_and_temp_files_in_unittest_jobs():
    """A mock passed in and returned, tempfile in the run's own scratch dir, numpy arrays: all normal in tests."""
    program = ("import unittest, tempfile, os\nfrom unittest import mock\nimport numpy as np\n"
               "class TestCases(unittest.TestCase):\n"
               "    def test_mock(self):\n        m = mock.MagicMock()\n        self.assertIs(task_func(m), m)\n"
               "    def test_tmp(self):\n        d = tempfile.mkdtemp()\n"
               "        self.assertTrue(os.path.isdir(d))\n"
               "    def test_array(self):\n        self.assertTrue(np.array_equal(task_func(np.arange(3)), np.arange(3)))\n")
    assert run("def task_func(x):\n    return x\n", {"type": "unittest", "program": program})["status"] == "passed"


# ---- the second design: verdicts from data, a run that sees only itself, nothing left behind ----------------------

def test_typed_wire_keeps_types_and_refuses_garbage():
    values = [(1, [2, (3,)]), {(1, 2): {3}, "k": frozenset({4})}, b"\x00\xff", 1 + 2j, 7 ** 9000, [True, 1, 1.0],
              None, {"": []}]
    for v in values:
        back = execute.decode(json.loads(json.dumps(execute.encode(v))))
        assert back == v and type(back) is type(v)
    assert type(execute.decode(execute.encode((1,)))) is tuple and type(execute.decode(execute.encode([1]))) is list
    for bad in (["Q", 1], [], ["S", ["L"]], ["D", 1], ["I", "zz"], {"a": 1}, ["B", "xyz"], ["O", 0, "C"]):
        try:
            execute.decode(bad)
        except execute.Garbage:
            continue
        raise AssertionError(f"{bad!r} was decoded")
    for body in (b"\xff", b"{", b"[1]", b'["R", 1]', b'["E", ["not an identifier!"], "m"]', b"[" * 100_000):
        try:
            execute.parse_answer(body)
        except execute.Garbage:
            continue
        raise AssertionError(f"{body[:20]!r} was accepted")


def test_every_result_says_how_far_it_can_be_trusted():
    mock_tests = {"type": "unittest", "program": "import unittest\nfrom unittest import mock\n"
                  "class T(unittest.TestCase):\n    def test_a(self):\n"
                  "        m = mock.MagicMock()\n        self.assertIs(task_func(m), m)\n"}
    jobs = [{"id": "assert", "code": RIGHT_ADD, "tests": ADD_TESTS},
            {"id": "call", "code": RIGHT_ADD, "tests": {"type": "call", "fn_name": "add",
                                                        "cases": [{"args": [1, 2], "expected": 3}]}},
            {"id": "stdio", "code": "print(3)", "tests": {"type": "stdio", "cases": [{"input": "", "output": "3"}]}},
            {"id": "mock", "code": "def task_func(x):\n    return x\n", "tests": mock_tests},
            {"id": "mock_wrong", "code": "def task_func(x):\n    return 1\n", "tests": mock_tests},
            {"id": "bad", "code": RIGHT_ADD}]
    got = {r["id"]: (r["status"], r["trust"]) for r in execute.run_jobs(jobs, workers=2)}
    assert got == {"assert": ("passed", "data"), "call": ("passed", "data"), "stdio": ("passed", "data"),
                   "mock": ("passed", "in-process"), "mock_wrong": ("failed", "in-process"),
                   "bad": ("harness_error", "data")}


def test_judge_uses_its_own_builtins_and_prelude_helpers():
    """HumanEval/32's shape: the prompt (prelude) defines poly; a program redefining poly, abs or round to fool the
    test gets nothing, while an entry point named like a builtin (MBPP/126's `sum`) is still the program's."""
    prelude = ("import math\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n"
               "def find_zero(xs):\n    \"\"\"a zero of poly\"\"\"\n")
    tests = {"type": "assert", "prelude": prelude, "program": "def check(candidate):\n"
             "    x = candidate([-6, 11, -6, 1])\n    assert abs(poly([-6, 11, -6, 1], x)) < 1e-6\n\ncheck(find_zero)\n"}
    right = prelude + "def find_zero(xs):\n    return 1.0\n"
    fake_poly = "def poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 123.0\n"
    fake_abs = "abs = lambda x: 0\ndef find_zero(xs):\n    return 123.0\n"
    sum_tests = {"type": "assert", "program": "assert sum(2, 3) == 5\n", "entry_point": "sum"}
    jobs = [{"id": "right", "code": right, "tests": tests}, {"id": "fake_poly", "code": fake_poly, "tests": tests},
            {"id": "fake_abs", "code": fake_abs, "tests": tests},
            {"id": "entry_sum", "code": "def sum(a, b):\n    return a + b\n", "tests": sum_tests},
            {"id": "no_entry", "code": "def sum(a, b):\n    return a + b\n", "tests": dict(sum_tests, entry_point=[])}]
    got = {r["id"]: r["status"] for r in execute.run_jobs(jobs, workers=2)}
    assert got == {"right": "passed", "fake_poly": "failed", "fake_abs": "failed", "entry_sum": "passed",
                   "no_entry": "runtime_error"}


def test_program_objects_cross_as_handles_and_compare_by_identity():
    tests = {"type": "assert", "program": "import re\n"
             "assert match('abc') is not None and match('abc').group(0) == 'abc' and match('x') is None\n"
             "p = Pair(1, 2)\nassert p.total() == 3 and longest([Pair(1, 5), p]) == 4\n"
             "p.b = 7\nassert p.total() == 8\n"
             "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]\n"
             "try:\n    positive(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\nelse:\n"
             "    assert False\n"
             "assert list(gen(3)) == [0, 1, 2] and len(Pair(1, 1)) == 2\n"}
    right = ("import re\ndef match(s):\n    return re.match('a.c', s)\n"
             "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
             "    def total(self):\n        return self.a + self.b\n    def __len__(self):\n        return 2\n"
             "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
             "def sort_in_place(xs):\n    xs.sort()\n"
             "class Negative(ValueError):\n    pass\n"
             "def positive(x):\n    if x < 0:\n        raise Negative('negative input')\n    return x\n"
             "def gen(n):\n    return (i for i in range(n))\n")
    always_equal = right.replace("    def total(self):\n        return self.a + self.b\n",
                                 "    def total(self):\n        return Eq()\n") + \
        "class Eq:\n    def __eq__(self, o):\n        return True\n"
    no_copy_back = right.replace("    xs.sort()\n", "    xs = sorted(xs)\n")
    jobs = [{"id": i, "code": c, "tests": tests} for i, c in (("right", right), ("always_equal", always_equal),
                                                               ("no_copy_back", no_copy_back))]
    got = {r["id"]: (r["status"], r["trust"]) for r in execute.run_jobs(jobs, workers=2)}
    assert got == {"right": ("passed", "data"), "always_equal": ("failed", "data"), "no_copy_back": ("failed", "data")}


def test_what_the_program_sends_is_its_failure_and_the_next_job_is_judged_right():
    """Garbage or forged frames on the answer pipe, an answer sent before the question, closed pipes: never a pass,
    never a harness error, and the next job on the same worker passes."""
    call = {"type": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 2}, {"args": [2], "expected": 3}]}
    attacks = [
        "import os, struct\nbody = b'[\"R\", 2, []]'\nos.write(5, struct.pack('<Q', len(body)) + body * 3)\n"
        "def f(x):\n    return 0\n",                               # answers for cases not yet asked
        "import os\nos.write(5, b'\\xff' * 100)\ndef f(x):\n    return 0\n",
        "import os, struct\nos.write(5, struct.pack('<Q', 1 << 40))\ndef f(x):\n    return 0\n",
        "import os\nos.close(4)\nos.close(5)\ndef f(x):\n    return x + 1\n",
        "import os, struct\ndef f(x):\n    body = b'[\"ok\", []]'\n    os.write(5, struct.pack('<Q', len(body)) + body)\n"
        "    return x + 1\n",
    ]
    jobs = []
    for i, code in enumerate(attacks):
        jobs += [{"id": f"attack{i}", "code": code, "tests": call},
                 {"id": f"next{i}", "code": "def f(x):\n    return x + 1\n", "tests": call}]
    for r in execute.run_jobs(jobs, workers=1):
        if r["id"].startswith("attack"):
            assert r["status"] in ("failed", "runtime_error", "timeout", "memory"), r
        else:
            assert r["status"] == "passed", r


def test_test_code_never_enters_a_program_process():
    """A later job on the same worker scans its whole process memory for an earlier job's test program. The needle
    the scan builds is in its own memory too, so it counts the secret against a control built the same way."""
    secret, control = "zebra-test-" + os.urandom(6).hex(), "zebra-test-" + os.urandom(6).hex()
    scan = ("import ctypes\nctypes.CDLL(None).prctl(4, 1, 0, 0, 0)   # PR_SET_DUMPABLE: /proc/self/mem readable\n"
            "def count(needle):\n    found = 0\n"
            "    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb') as mem:\n"
            "        for line in maps:\n            addr, perms = line.split()[:2]\n"
            "            if 'r' not in perms:\n                continue\n"
            "            lo, hi = (int(x, 16) for x in addr.split('-'))\n            try:\n"
            "                for start in range(lo, hi, 1 << 20):\n                    mem.seek(start)\n"
            "                    found += mem.read(min(1 << 20, hi - start)).count(needle)\n"
            "            except (OSError, OverflowError, ValueError):\n                pass\n"
            "    return found\n"
            "def add(a, b):\n"
            f"    leaked = count(b'zebra-test-' + b'{secret[11:]}') > count(b'zebra-test-' + b'{control[11:]}')\n"
            "    return a + b if leaked else 0\n")
    tests = {"type": "assert", "program": f"SECRET = {secret!r}\n" + ADD_TESTS["program"]}
    jobs = [{"id": "first", "code": RIGHT_ADD, "tests": tests},
            {"id": "scan", "code": scan, "tests": ADD_TESTS}]
    got = {r["id"]: r["status"] for r in execute.run_jobs(jobs, workers=1, timeout=20.0)}
    assert got == {"first": "passed", "scan": "failed"}
    leak = {"type": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}]}
    in_memory = scan.replace("def add(a, b):\n", f"SECRET = {secret!r}\ndef add(a, b):\n")
    assert run(in_memory, leak, timeout=20.0)["status"] == "passed"   # the scan does find what is there


def test_a_python_install_under_tmp_is_seen_by_its_runs_read_only():
    """A venv in /tmp (common in containers): a run's /tmp is its own, so the install is bound back into it at its
    own path, read-only; a module only that venv has must import, and its directory must not be writable."""
    work = tempfile.mkdtemp(prefix="recode-venv-test-", dir="/tmp")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", work + "/venv"],
                       check=True)
        site = subprocess.run([work + "/venv/bin/python", "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        with open(site + "/recode_probe_module.py", "w") as f:
            f.write("ANSWER = 42\n")
        probe = ("import os, recode_probe_module as m\n"
                 "def f():\n"
                 "    try:\n        open(os.path.dirname(m.__file__) + '/x', 'w').close()\n        writable = True\n"
                 "    except OSError:\n        writable = False\n"
                 "    return [m.ANSWER, writable, os.path.exists(os.path.dirname(m.__file__) + '/x')]\n")
        jobs = [{"id": 0, "code": probe, "tests": {"type": "call", "fn_name": "f",
                                                  "cases": [{"args": [], "expected": [42, False, False]}]}}]
        script = (f"import json, sys; sys.path.insert(0, {ROOT!r}); import execute; "
                  f"print(json.dumps([execute.run_jobs({jobs!r}, workers=1), execute.isolation()]))")
        out = subprocess.run([work + "/venv/bin/python", "-c", script], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        results, isolation = json.loads(out.stdout.strip().splitlines()[-1])
        assert results[0]["status"] == "passed", (results[0], isolation)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_run_sees_only_itself():
    probe = ("import os, sys, tempfile, resource\n"
             "def f(root, data):\n"
             "    def writable(d):\n        try:\n            open(d + '/probe', 'w').close()\n            return True\n"
             "        except OSError:\n            return False\n"
             "    soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
             "    try:\n        resource.setrlimit(resource.RLIMIT_AS, (hard + 1, hard + 1))\n        raised = True\n"
             "    except (ValueError, OSError):\n        raised = False\n"
             "    tmp_files = sorted(os.listdir('/tmp'))\n"
             # the checkout may hold the venv (CI's does), so its path can exist in a run, but none of its files
             "    return [os.path.exists(root + '/README.md'), os.path.exists(data + '/execute.py'),\n"
             "            writable('/tmp'), writable('/dev/shm'),\n"
             "            writable(os.getcwd()), writable('/run/lock') or writable('/'), soft == hard, raised,\n"
             "            tmp_files]\n")
    # a run's /tmp holds nothing but the way to a Python install that lives under the host's /tmp (bound back in)
    install_in_tmp = sorted({p.split("/")[2] for p in (sys.prefix, os.path.realpath(sys.prefix))
                             if p.startswith("/tmp/")})
    tests = {"type": "call", "fn_name": "f", "cases": [{"args": [ROOT, os.path.dirname(execute.__file__)],
                                                        "expected": [False, False, True, True, True, False, True,
                                                                     False, install_in_tmp]}]}
    for attempt in range(2):   # the second run must not see the first one's /tmp
        r = run(probe, tests)
        assert r["status"] == "passed", r
    text = execute.isolation(2)
    assert "read-only root" in text and "IPC namespace" in text and "hard rlimits" in text


def test_right_programs_using_the_standard_library_pass():
    code = ("import multiprocessing, tempfile, threading, subprocess, sys, os\nimport numpy as np\n"
            "def add(a, b):\n    lock = multiprocessing.Lock()\n    with lock:\n        pass\n"
            "    with tempfile.NamedTemporaryFile('w') as f:\n        f.write('x')\n"
            "    t = threading.Thread(target=lambda: None)\n    t.start()\n    t.join()\n"
            "    out = subprocess.run([sys.executable, '-c', 'print(1)'], capture_output=True).stdout\n"
            "    return int(np.add(a, b)) if out.strip() == b'1' else 0\n")
    np_tests = {"type": "assert", "program": "import numpy as np\nimport numpy.testing\n"
                "np.testing.assert_allclose(np.array([add(1, 2)]), [3])\n"}
    jobs = [{"id": kind, "code": code, "tests": t} for kind, t in (("assert", ADD_TESTS), ("numpy", np_tests))]
    jobs.append({"id": "unittest_np", "code": "import numpy\n" + RIGHT_ADD, "tests": {
        "type": "unittest", "program": "import unittest, os\nimport numpy as np\nclass T(unittest.TestCase):\n"
        "    def test_a(self):\n        np.testing.assert_allclose([add(1, 2)], [3])\n"}})
    got = {r["id"]: (r["status"], r["detail"]) for r in execute.run_jobs(jobs, workers=2, timeout=20.0)}
    assert all(status == "passed" for status, _ in got.values()), got


def test_nothing_left_behind_and_deep_trees_in_the_fallback_mode():
    """RECODE_SANDBOX=minimal makes a directory per run in the host's temp dir: a run (even one that leaves a tree
    1,200 levels deep and read-only), a pool, and a pool whose zygote was killed mid-run leave none behind."""
    script = (
        "import json, os, sys, tempfile, time, threading\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "import execute\n"
        "deep = ('import os\\nfor i in range(1200):\\n    os.mkdir(\"d\" * 50)\\n    os.chdir(\"d\" * 50)\\n'\n"
        "        'os.chmod(\".\", 0o500)\\ndef add(a, b):\\n    return a + b\\n')\n"
        f"tests = {ADD_TESTS!r}\n"
        "pool = execute.start_pool(1)\n"
        "mine = lambda pids: [e for e in os.listdir(tempfile.gettempdir())\n"
        "                     if any(e.startswith(f'recode-exec-{p}-') for p in pids)]\n"
        "pids = {pool.zygotes[0].proc.pid}\n"
        "statuses = [r['status'] for r in execute.run_jobs([{'id': 0, 'code': deep, 'tests': tests},\n"
        "            {'id': 1, 'code': 'def add(a, b):\\n    return a + b\\n', 'tests': tests}], workers=1)]\n"
        "after_runs = mine(pids)\n"
        "slow = {'id': 2, 'code': 'import time\\ntime.sleep(30)', 'tests': tests}\n"
        "z = pool.zygotes[0].proc\n"
        "threading.Timer(1.0, z.kill).start()\n"
        "crashed = execute.run_jobs([slow], workers=1)[0]['status']\n"
        "pool = execute.start_pool(1)\n"
        "pids.add(pool.zygotes[0].proc.pid)\n"
        "execute.run_jobs([{'id': 3, 'code': 'x = 1', 'tests': tests}], workers=1)\n"
        "pool.close()\n"
        "time.sleep(0.5)\n"
        "print(json.dumps({'statuses': statuses, 'after_runs': after_runs, 'crashed': crashed,\n"
        "                  'at_the_end': mine(pids)}))\n")
    report = run_minimal(script, timeout=300)
    assert report["statuses"] == ["passed", "passed"]
    assert report["after_runs"] == [] and report["at_the_end"] == []
    assert report["crashed"] == "harness_error"   # the killed zygote's run dir is swept by the zygote replacing it


def test_a_test_program_that_loops_or_prints_does_not_break_the_judge():
    """The judge has a limit of its own for the test code (not the program's doing, but never a hang), and a test
    program printing cannot write into the judge's protocol; the next job on the worker is judged normally."""
    loops = {"type": "assert", "program": "print('{\"verdict\": [\"passed\", 1, 1, \"\"]}')\nwhile True:\n    pass\n"}
    prints = {"type": "assert", "program": "print('noise ' * 10000)\n" + ADD_TESTS["program"]}
    jobs = [{"id": "loops", "code": RIGHT_ADD, "tests": loops}, {"id": "prints", "code": RIGHT_ADD, "tests": prints},
            {"id": "next", "code": RIGHT_ADD, "tests": ADD_TESTS}]
    got = {r["id"]: r["status"] for r in execute.run_jobs(jobs, workers=1, timeout=1.0)}
    assert got == {"loops": "timeout", "prints": "passed", "next": "passed"}


def test_the_memory_cap_is_per_run_where_a_cgroup_can_be_made():
    """Four children of 150 MiB each stay under a per-process cap of 256 MiB but not under a per-run one."""
    code = ("import os, time\npids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        try:\n            b = bytearray(150 << 20)\n            time.sleep(0.5)\n            os._exit(0)\n"
            "        except MemoryError:\n            os._exit(1)\n    pids.append(pid)\n"
            "ok = all(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in pids)\n"
            "def add(a, b):\n    return a + b if ok else 0\n")
    one = code.replace("range(4)", "range(1)")
    results = execute.run_jobs([{"id": "four", "code": code, "tests": ADD_TESTS},
                                {"id": "one", "code": one, "tests": ADD_TESTS}], workers=2, memory_mb=256)
    got = {r["id"]: r["status"] for r in results}
    if "cgroup per worker" in execute.isolation(2):
        assert got["four"] in ("failed", "memory") and got["one"] == "passed", got
    else:
        assert "no cgroup" in execute.isolation(2) and got["one"] == "passed"
