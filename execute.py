"""
execute.py: run untrusted, model-written Python against tests and return a verdict you can train on.

Every reward in grpo.py and every pass@k in evaluate.py is a verdict from this file. A job is a program plus a
test specification of one of four kinds:

    {"type": "assert",   "program": "...", "prelude": "...", "entry_point": "f"}   HumanEval check(), MBPP asserts
    {"type": "stdio",    "cases": [{"input": "...", "output": "..."}], "atol": 0}    real stdin through a pipe
    {"type": "call",     "fn_name": "f", "cases": [{"args": [...], "expected": ...}], "atol": 0}
    {"type": "unittest", "program": "..."}      unittest.TestCase classes (BigCodeBench)

A call spec may add "compare": "evalplus" (its expected outputs are then typed values, encode's format, compared as
EvalPlus 0.3.1 compares: ==, then np.allclose with rtol 1e-7) and "sample_timeout" (seconds for all its cases together).
"prelude" (optional) is trusted code run in the judge before the tests (HumanEval's prompt, whose helpers such as
`poly` the tests then call as the judge's own); "entry_point" (optional) names program functions the tests may call
even where a builtin or a prelude helper has the same name; "in_process": true keeps a test whose objects cannot
cross as data (a test that runs a reference solution next to the candidate) in the program's process.

Command line (one job per JSONL line, one result per line, same order):

    python execute.py jobs.jsonl --out results.jsonl [--workers N] [--timeout S] [--memory-mb M] [--fail-fast]

Python API (what grpo.py and evaluate.py call):

    from execute import run_jobs
    results = run_jobs([{"id": 0, "code": "def f(x): return x", "tests": {...}}], timeout=3.0, fail_fast=True)

Every result has "trust": "data" when the verdict was decided outside the process that ran program code, from
data only, or "in-process" when the tests had to run next to the program (see README "execute.py").

How it works:
- Per worker, two clean interpreters are spawned (never forked from a process holding torch or CUDA): a zygote that
  forks one sandboxed child per run and never sees test code, and a judge that runs test code and never runs program
  code. With root and namespaces each child is PID 1 of a fresh PID namespace, in an empty network namespace, with a
  fresh IPC and mount namespace: a read-only root holding only the Python install and system libraries, and fresh
  tmpfs for cwd, /tmp and /dev/shm; it runs as an unprivileged uid of its own, with hard rlimits and, where one can
  be made, a cgroup capping the run's memory and processes. Without privileges it falls back and says so.
- call / stdio: the zygote drives the cases one at a time (it sends case i and reads exactly one answer), decodes the
  answer from a typed plain-data encoding and ships it to this process, which holds the expected outputs and compares.
- assert / unittest: the judge runs the tests with the program's functions reached over a pipe: arguments and
  results cross as typed plain data both ways (other objects as opaque handles), exceptions as type names and a
  message. Nothing the program says is believed except as the value it returns.
"""
import argparse
import ast
import ctypes
import gc
import hashlib
import json
import math
import os
import resource
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import tempfile
import time
import types
from collections import Counter, OrderedDict, defaultdict, deque
from decimal import Decimal, InvalidOperation

STATUSES = ("passed", "failed", "timeout", "memory", "runtime_error", "syntax_error", "harness_error")
PROGRAM_STATUSES = STATUSES[:-1]      # what a program can cause; harness_error only ever comes from our side
TEST_TYPES = ("assert", "stdio", "call", "unittest")
# How a call test compares an output with its expected one: "plain" (JSON-plain data, expected is JSON) or
# "evalplus" (expected is a typed value, execute.encode's format, compared as EvalPlus 0.3.1 compares)
COMPARE_RULES = ("plain", "evalplus")

# Limits beyond the three on the command line. Sized for benchmark code; raise them for heavier suites.
STDOUT_LIMIT = 16 << 20      # bytes of stdout kept per run; a stdio program printing more is stopped
STDERR_KEEP = 4096           # tail of stderr kept for the failure detail
FILE_SIZE_LIMIT = 64 << 20   # RLIMIT_FSIZE: largest file a program may write
SCRATCH_MB = 128             # size of the tmpfs a run gets for cwd, /tmp and /dev/shm together (namespaced mode)
OPEN_FILES = 256             # RLIMIT_NOFILE
PROCESSES = 128              # RLIMIT_NPROC for the program's own uid, and the cgroup's pids.max (threads count too)
UID_BASE = 1_000_000_000     # program uids: UID_BASE + 1024 * (runner pid % 10**6) + slot, unique per runner and slot
CGROUP_SLACK_MB = 64         # a run's cgroup memory cap is --memory-mb plus this (pages it copies from the zygote)
ANSWER_LIMIT = 256 << 20     # largest answer frame a program may send; larger is the program's failure
DIGEST_ABOVE = 8 << 20       # a call result whose plain JSON is longer is shipped to the caller as a sha256 digest
RUN_CWD = "/sandbox"         # a run's cwd and HOME in namespaced mode (on the run's fresh tmpfs)
RUN_DIR = "/.run"            # where that tmpfs is mounted; /sandbox, /tmp and /dev/shm point into it
PER_RUN = {"/tmp/": RUN_DIR + "/tmp/", "/dev/shm/": RUN_DIR + "/shm/"}   # host prefix -> where a run has its own
STASH = "/.install"          # where a Python install found under a PER_RUN prefix waits to be bound into each run
# "auto": the strongest isolation the machine allows. "minimal": no namespaces and no uid switch, as on a machine
# without privileges (used by the tests to exercise the fallback; never choose it for real training).
SANDBOX = os.environ.get("RECODE_SANDBOX", "auto")

# --------------------------------------------------------------------------------------------------------------
# Linux plumbing: the few syscalls the standard library of Python 3.11 does not wrap.

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags):
    _check(_libc.unshare(flags), "unshare")


def _mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _prctl(option, value):
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), "prctl")


# The kernel keyring is per uid and outlives a run (a key added by one run is readable by the next run of the same
# worker), and no namespace short of a user namespace separates it: its three syscalls are refused instead.
KEYRING_SYSCALLS = {"x86_64": (0xC000003E, (248, 249, 250)), "aarch64": (0xC00000B7, (217, 218, 219))}.get(
    os.uname().machine)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _keyring_filter():
    """The prctl calls of a seccomp filter under which add_key, request_key and keyctl fail with EPERM (x32
    numbers too) and all else is allowed. Built once in the zygote: a run only makes the two calls (building ctypes
    objects in a freshly forked child costs milliseconds of copy-on-write faults)."""
    arch, numbers = KEYRING_SYSCALLS
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, refuse = 0x7FFF0000, 0x00050000 | 1
    n = len(numbers)
    prog = [(load, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, allow), (load, 0, 0, 0), (jge, n + 1, 0, 0x40000000)]
    prog += [(jeq, n - i, 0, nr) for i, nr in enumerate(numbers)]
    prog += [(ret, 0, 0, allow), (ret, 0, 0, refuse)]
    filters = (_SockFilter * len(prog))(*[_SockFilter(*f) for f in prog])
    fprog = _SockFprog(len(prog), filters)
    zero = ctypes.c_ulong(0)
    return (filters, fprog, (38, ctypes.c_ulong(1), zero, zero, zero),          # PR_SET_NO_NEW_PRIVS
            (22, ctypes.c_ulong(2), ctypes.byref(fprog), zero, zero))           # PR_SET_SECCOMP, FILTER


def _refuse_keyring(prepared):
    _check(_libc.prctl(*prepared[2]), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.prctl(*prepared[3]), "prctl(PR_SET_SECCOMP)")


# --------------------------------------------------------------------------------------------------------------
# Parent side: validate jobs, keep a pool of workers, hand out jobs, compare outputs as plain data.

def validate_job(job):
    """Return None if the job is well formed, else a message naming what is wrong."""
    if not isinstance(job, dict):
        return f"a job must be a JSON object, got {type(job).__name__}"
    if not isinstance(job.get("code"), str):
        return "job has no 'code' string"
    tests = job.get("tests")
    if not isinstance(tests, dict):
        return "job has no 'tests' object"
    kind = tests.get("type")
    if kind not in TEST_TYPES:
        return f"unknown test type {kind!r} (expected one of {', '.join(TEST_TYPES)})"
    if kind in ("assert", "unittest"):
        if not isinstance(tests.get("program"), str):
            return f"{kind} tests need a 'program' string"
        if not isinstance(tests.get("prelude", ""), str):
            return "'prelude' must be a string of trusted code"
        entry = tests.get("entry_point", [])
        if not (isinstance(entry, str) or isinstance(entry, list) and all(isinstance(e, str) for e in entry)):
            return "'entry_point' must be a name or a list of names"
    if kind in ("stdio", "call"):
        cases = tests.get("cases")
        if not isinstance(cases, list) or not cases:
            return f"{kind} tests need a non-empty 'cases' list"
        for i, case in enumerate(cases):
            if not isinstance(case, dict):
                return f"case {i} is not an object"
            if kind == "stdio" and not (isinstance(case.get("input"), str) and isinstance(case.get("output"), str)):
                return f"stdio case {i} needs 'input' and 'output' strings"
            if kind == "call" and not (isinstance(case.get("args"), list) or isinstance(case.get("args_py"), str)):
                return f"call case {i} needs an 'args' list or an 'args_py' literal"
            if "timeout" in case and not (isinstance(case["timeout"], (int, float)) and case["timeout"] > 0):
                return f"case {i}: 'timeout' must be a positive number of seconds"
        if kind == "call" and not isinstance(tests.get("fn_name"), str):
            return "call tests need a 'fn_name' string"
        if tests.get("compare", "plain") not in COMPARE_RULES or kind == "stdio" and "compare" in tests:
            return f"'compare' must be one of {', '.join(COMPARE_RULES)} (call tests only)"
        if tests.get("compare") == "evalplus":
            for i, case in enumerate(cases):
                try:
                    "expected" in case and decode(case["expected"])
                except Garbage as e:
                    return f"call case {i}: 'expected' is not a typed value (execute.encode's format): {e}"
        if not (isinstance(tests.get("sample_timeout", 1), (int, float)) and tests.get("sample_timeout", 1) > 0):
            return "'sample_timeout' must be a positive number of seconds"
        if not isinstance(tests.get("atol", 0), (int, float)) or tests.get("atol", 0) < 0:
            return "'atol' must be a non-negative number"
    return None


def plain_equal(actual, expected, atol=0.0):
    """Equality of JSON-plain values; numbers compare numerically, floats within atol when atol > 0."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if actual == expected:
            return True
        return atol > 0 and math.isfinite(actual) and math.isfinite(expected) and abs(actual - expected) <= atol
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(plain_equal(a, e, atol) for a, e in zip(actual, expected))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(plain_equal(actual[k], expected[k], atol) for k in expected)
    return type(actual) is type(expected) and actual == expected


# EvalPlus 0.3.1's output check (evalplus/eval/__init__.py, unsafe_execute and is_floats), on decoded typed data.
# synth.py's oracle programs run these same functions in the judge (it includes their source).
EVALPLUS_RTOL = 1e-07           # the rtol EvalPlus passes to np.allclose (np.testing.assert_allclose's default)
EVALPLUS_FLOAT_ATOL = 1e-6      # the atol EvalPlus enforces once an expected output is float-valued


def evalplus_is_floats(x):
    """A float, a non-empty list or tuple of floats only, or a float32/float64 ndarray."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    if type(x).__name__ == "ndarray":
        import numpy
        return x.dtype == numpy.float64 or x.dtype == numpy.float32
    return False


def evalplus_atol(atol, expected):
    """The tolerance EvalPlus uses from this input on: its loop raises a zero atol to 1e-6 at the first
    float-valued expected output and keeps it for the rest of the test group."""
    return EVALPLUS_FLOAT_ATOL if atol == 0 and evalplus_is_floats(expected) else atol


def evalplus_close(out, expected, atol):
    """EvalPlus's fallback when out != expected: with a tolerance, the same type, the same length and
    np.allclose(rtol=1e-7, atol). Anything numpy refuses (strings, dicts, ragged lists) is not close."""
    if atol == 0 or type(out) is not type(expected):
        return False
    if isinstance(expected, (list, tuple)) and len(out) != len(expected):
        return False
    import numpy
    try:
        return bool(numpy.allclose(out, expected, rtol=EVALPLUS_RTOL, atol=atol))
    except Exception:
        return False


def evalplus_equal(out, expected, atol):
    """EvalPlus's verdict on one output: Python's == (so 1 == True, [1] != (1,)), else evalplus_close. An
    equality numpy cannot make a truth value of is a failure, as EvalPlus's assert makes it."""
    try:
        return bool(out == expected) or evalplus_close(out, expected, atol)
    except Exception:
        return False


def stdout_matches(actual, expected, atol=0.0):
    """LiveCodeBench's rule: strip, compare line by line (each stripped), then token-wise as exact decimals.

    atol > 0 adds a float tolerance per token (LiveCodeBench has none; a tolerance is a recorded deviation)."""
    out_lines, exp_lines = actual.strip().split("\n"), expected.strip().split("\n")
    if len(out_lines) != len(exp_lines):
        return False
    for out_line, exp_line in zip(out_lines, exp_lines):
        out_line, exp_line = out_line.strip(), exp_line.strip()
        if out_line == exp_line:
            continue
        out_tokens, exp_tokens = out_line.split(), exp_line.split()
        if len(out_tokens) != len(exp_tokens):
            return False
        for out_tok, exp_tok in zip(out_tokens, exp_tokens):
            if out_tok == exp_tok:
                continue
            try:
                a, b = Decimal(out_tok), Decimal(exp_tok)
            except InvalidOperation:
                return False
            if not (a == b or (atol > 0 and a.is_finite() and b.is_finite() and abs(a - b) <= Decimal(repr(atol)))):
                return False
    return True


def _send(fd, obj):
    _write_all(fd, _frame(json.dumps(obj).encode()))


def _frame(body):
    return struct.pack("<Q", len(body)) + body


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd, deadline=None):
    """Read one length-prefixed JSON message (between trusted processes); None at EOF; TimeoutError past the
    deadline."""
    header = _read_exact(fd, 8, deadline)
    if header is None:
        return None
    body = _read_exact(fd, struct.unpack("<Q", header)[0], deadline)
    return None if body is None else json.loads(body)


def _read_exact(fd, n, deadline):
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _clean_env():
    # Built from scratch: no token, proxy or CUDA variable of the caller reaches a program. Thread counts are pinned
    # so numpy inside a job does not spawn one thread per core of a big host.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC", "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _spawn(role, *args, pass_fds=()):
    # -s -P rather than -I: the environment is already built from scratch, and -I would drop PYTHONHASHSEED=0,
    # which keeps set and dict-of-str iteration order, and so verdicts, reproducible from run to run.
    return subprocess.Popen([sys.executable, "-s", "-P", os.path.abspath(__file__), role, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_clean_env(), cwd="/",
                            start_new_session=True, pass_fds=pass_fds)


class Worker:
    """One zygote (forks the sandboxed runs, never sees test code) and one judge (runs test code, never runs program
    code), joined by a unix socket over which the zygote hands the judge each run's request and answer pipes."""

    def __init__(self, slot):
        if SANDBOX not in ("auto", "minimal"):
            raise ValueError(f"RECODE_SANDBOX must be 'auto' or 'minimal', not {SANDBOX!r}")
        uid = UID_BASE + 1024 * (os.getpid() % 1_000_000) + slot
        zsock, jsock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = _spawn("--zygote", uid, SANDBOX, zsock.fileno(), pass_fds=(zsock.fileno(),))
            self.judge = _spawn("--judge", jsock.fileno(), pass_fds=(jsock.fileno(),))
        finally:
            zsock.close(), jsock.close()
        self.to_zygote, self.from_zygote = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.to_judge, self.from_judge = self.judge.stdin.fileno(), self.judge.stdout.fileno()
        hello = _recv(self.from_zygote, time.monotonic() + 60)
        if not hello or "isolation" not in hello or not _recv(self.from_judge, time.monotonic() + 60):
            self.close()
            raise RuntimeError(f"execute.py could not start its sandbox processes {slot}")
        self.isolation = hello["isolation"]

    def run(self, job, timeout, memory_mb, fail_fast):
        tests = job["tests"]
        if tests["type"] in ("call", "stdio"):
            return dict(self._run_cases(job, timeout, memory_mb, fail_fast), trust="data")
        in_process = bool(tests.get("in_process")) or (tests["type"] == "unittest" and not _judge_can_run(tests))
        result = self._run_judged(job, "inproc" if in_process else "serve", timeout, memory_mb)
        if result is None:      # the test passes the program something that cannot cross as data
            result = self._run_judged(job, "inproc", timeout, memory_mb)
        return result

    def _run_cases(self, job, timeout, memory_mb, fail_fast):
        """The zygote gets the program and the test inputs only: expected outputs stay in this process, which judges
        each case as the zygote reports it (the zygote, not the program, says which case an answer belongs to)."""
        tests = job["tests"]
        cases = tests["cases"]
        inputs = [{k: c[k] for k in ("input", "args", "args_py", "timeout") if k in c} for c in cases]
        _send(self.to_zygote, {"code": job["code"], "tests": dict(tests, cases=inputs), "timeout": timeout,
                               "memory_mb": memory_mb})
        budget = time.monotonic() + sum(c.get("timeout", timeout) for c in cases) + timeout + 2 * len(cases) + 30
        passed, first_failure, outputs, times = 0, None, [None] * len(cases), [None] * len(cases)
        check = _output_check(tests)
        while True:
            message = _recv(self.from_zygote, budget)
            if message is None:
                raise EOFError("the sandbox process exited")
            if "end" not in message:          # one case's outcome
                times[message["index"]] = message.get("seconds")
                failure = _judge_case(tests, message, outputs, check)
                if failure is None:
                    passed += 1
                elif first_failure is None:
                    first_failure = failure
                _send(self.to_zygote, {"go_on": failure is None or not fail_fast})
                continue
            end = message["end"]
            if first_failure is None and end.get("error"):
                first_failure = end["error"]
            outcome = first_failure or {"status": "passed", "detail": ""}
            result = {"status": outcome["status"], "passed": passed, "total": len(cases),
                      "detail": outcome["detail"]}
            if any("expected" not in c for c in cases) and tests["type"] == "call":
                result["outputs"], result["times"] = outputs, times   # record mode: outputs and seconds per case
            return result

    def _run_judged(self, job, mode, timeout, memory_mb):
        """assert / unittest: the zygote forks the program's run and hands its pipes to the judge, which runs the
        tests. The verdict is the judge's; how the run ended is the zygote's. None: rerun in-process."""
        tests = job["tests"]
        entry = tests.get("entry_point", [])
        _send(self.to_zygote, {"code": job["code"], "tests": {"type": "judged"}, "timeout": timeout,
                               "memory_mb": memory_mb})
        _send(self.to_judge, {"program": tests["program"], "prelude": tests.get("prelude", ""), "mode": mode,
                              "kind": tests["type"], "timeout": timeout,
                              "entry_point": [entry] if isinstance(entry, str) else entry})
        budget = time.monotonic() + timeout + 30
        verdict, end = _recv(self.from_judge, budget), _recv(self.from_zygote, budget)
        if verdict is None or end is None:
            raise EOFError("a sandbox process exited")
        end = end["end"]
        if "cannot_cross" in verdict:
            return None
        trust = verdict.get("trust", "data")
        if end.get("error"):                              # the run could not be set up: never the program's doing
            status, passed, total, detail = end["error"]["status"], 0, 1, end["error"]["detail"]
        elif "verdict" in verdict:
            status, passed, total, detail = verdict["verdict"]
        else:                                             # the program's process ended before the tests did
            ended = _how_it_ended(end)
            status, passed, total, detail = ended["status"], 0, 1, ended["detail"]
        return {"status": status, "passed": passed, "total": total, "detail": detail, "trust": trust}

    def close(self):
        for proc in (self.proc, getattr(self, "judge", None)):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    try:
                        stream.close()
                    except OSError:
                        pass


def _how_it_ended(end):
    """The status of a run that stopped answering, from what the zygote saw: timeout, a signal, or an exit."""
    code = end.get("exit")
    if end.get("timed_out"):
        return {"status": "timeout", "detail": f"exceeded the {end.get('limit', 0):g} s limit"}
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if -code == signal.SIGKILL:
            return {"status": "memory", "detail": f"killed by {name} (likely out of memory)"}
        return {"status": "runtime_error", "detail": f"killed by {name}"}
    tail = (end.get("stderr") or "").strip().splitlines()[-1:]
    return {"status": "failed", "detail": _clip(f"exited with code {code} before the tests finished"
                                                + (f": {tail[0]}" if tail else ""))}


# Test programs the judge can run with the program's functions reached as data: those that import only these.
# Anything else (pandas, mocks, files, matplotlib: BigCodeBench) runs in-process and is marked so.
JUDGE_IMPORTS = frozenset("unittest math cmath itertools functools operator collections heapq bisect re string "
                          "copy typing random statistics fractions decimal json numpy sys".split())


def _judge_can_run(tests):
    try:
        tree = ast.parse(tests["program"])
    except SyntaxError:
        return True         # the judge reports the broken test program
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(n.split(".")[0] not in JUDGE_IMPORTS or n.startswith("unittest.mock") for n in names):
            return False
        if isinstance(node, ast.Name) and node.id in ("open", "mock", "patch", "__import__", "globals"):
            return False
    return True


def _output_check(tests):
    """check(index, the zygote's value) -> None when call case index's output matches its expected one, else what
    differs. "evalplus": both sides are typed values, decoded here, compared by evalplus_equal with the tolerance
    EvalPlus would use at that input (expected outputs decode one by one, in case order, as cases are judged)."""
    cases, atol = tests["cases"], float(tests.get("atol", 0))
    if tests.get("compare", "plain") == "plain":
        def check(index, value):
            if plain_equal(value, cases[index]["expected"], atol):
                return None
            return f"expected {_clip(json.dumps(cases[index]['expected']))}, got {_clip(json.dumps(value))}"
        return check
    expected, atols = [], []

    def check(index, value):
        while len(expected) <= index:
            case = cases[len(expected)]
            expected.append(decode(case["expected"]) if "expected" in case else None)
            atols.append(evalplus_atol(atols[-1] if atols else atol, expected[-1]))
        try:
            out = decode(value)
        except Garbage as e:     # the zygote encodes what it decoded: not expected, but never a pass
            return f"unreadable output: {e}"
        if evalplus_equal(out, expected[index], atols[index]):
            return None
        return f"expected {_clip(repr(expected[index]))}, got {_clip(repr(out))}"
    return check


def _judge_case(tests, message, outputs, check):
    """The parent's verdict on one reported case: None if it passed, else {"status", "detail"}."""
    index = message["index"]
    case, atol = tests["cases"][index], float(tests.get("atol", 0))
    if message.get("error"):
        return {"status": message["error"]["status"], "detail": f"case {index}: {message['error']['detail']}"}
    if tests["type"] == "stdio":
        if stdout_matches(message["stdout"], case["output"], atol):
            return None
        return {"status": "failed", "detail": f"case {index}: expected {_clip(case['output'])!r}, "
                                              f"got {_clip(message['stdout'])!r}"}
    if "expected" not in case:                  # record mode: the caller wants the output itself
        outputs[index] = message["value"]
        return None
    difference = check(index, message["value"])
    return None if difference is None else {"status": "failed", "detail": f"case {index}: {difference}"}


class Pool:
    """K workers; worker thread k owns worker k."""

    def __init__(self, workers):
        self.zygotes = []
        try:
            for i in range(workers):
                self.zygotes.append(Worker(i))
        except BaseException:
            self.close()
            raise
        self.isolation = self.zygotes[0].isolation

    def run_one(self, slot, job, timeout, memory_mb, fail_fast):
        try:
            return self.zygotes[slot].run(job, timeout, memory_mb, fail_fast)
        except (TimeoutError, EOFError, OSError, ValueError, KeyError, TypeError, IndexError) as e:
            # Zygote and judge are trusted code, so this is our fault, never the model's: report it, start new ones.
            self.zygotes[slot].close()
            self.zygotes[slot] = Worker(slot)
            return {"status": "harness_error", "passed": 0, "total": 0, "detail": f"runner failure: {e!r}",
                    "trust": "data"}

    def close(self):
        for z in self.zygotes:
            z.close()


_pool = None
_pool_lock, _run_lock = threading.Lock(), threading.Lock()


def default_workers():
    """One sandbox per core, shared among the ranks torchrun started on this node (oversubscribed cores turn time
    limits into noise)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def start_pool(workers=None):
    """Start (or resize) the pool. Call it before importing torch to keep the pool's start cheap and clean."""
    global _pool
    if _libc is None:
        raise RuntimeError("execute.py runs untrusted code only on Linux (it needs namespaces, prctl and pidfd)")
    if workers is None and _pool is not None:
        return _pool        # keep whatever size the caller started it with
    workers = min(workers or default_workers(), 1024)
    with _pool_lock:
        if _pool is None or len(_pool.zygotes) != workers:
            if _pool is not None:
                _pool.close()
            _pool = Pool(workers)
    return _pool


def isolation(workers=None):
    """The isolation the sandbox actually has on this machine, in words."""
    return start_pool(workers).isolation


def run_jobs(jobs, workers=None, timeout=3.0, memory_mb=2048, fail_fast=False, progress=False):
    """Run every job in the sandbox; return one result dict per job, in order (see the module docstring)."""
    with _run_lock:     # worker thread k owns worker k for the whole batch: one batch at a time
        pool = start_pool(workers)
        results = [None] * len(jobs)
        todo, lock = iter(range(len(jobs))), threading.Lock()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(jobs), desc="execute", unit="job", dynamic_ncols=True)

        def worker(slot):
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                job = jobs[i]
                problem = validate_job(job)
                if problem is not None:
                    result = {"status": "harness_error", "passed": 0, "total": 0, "detail": f"invalid job: {problem}",
                              "trust": "data"}
                else:
                    result = pool.run_one(slot, job, float(timeout), int(memory_mb), bool(fail_fast))
                results[i] = {"id": job.get("id") if isinstance(job, dict) else None, **result}
                if bar is not None:
                    bar.update(1)

        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(len(pool.zygotes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if bar is not None:
            bar.close()
        return results


# --------------------------------------------------------------------------------------------------------------
# The wire: typed plain data, as JSON arrays tagged by their first element, so that tuple, list, set, frozenset,
# dict (with typed keys), bool, int, float, str, bytes, complex and None stay distinguishable. Encoding runs on
# either side; decoding of what a program sent runs only in trusted processes (zygote, judge) and refuses
# anything else: what the program sends is its answer, never an instruction.

_SCALAR_TYPES = (str, float, bool, type(None))


class Garbage(Exception):
    """What a program sent is not a well-formed answer: the program's failure."""


def encode(value, objects=None, depth=0):
    """value -> JSON-able tagged structure. objects: a list to keep values that are not data (an opaque handle
    crosses instead); None: such values are refused."""
    t = type(value)
    if t in _SCALAR_TYPES:
        return value
    if t is int:
        return value if value.bit_length() <= 10_000 else ["I", hex(value)]
    if depth > 100:
        raise ValueError("value nested more than 100 levels deep")
    d = depth + 1
    if t is list or t is deque:
        return ["L", *[encode(v, objects, d) for v in value]]
    if t is tuple:
        return ["T", *[encode(v, objects, d) for v in value]]
    if t is dict or t in (Counter, OrderedDict, defaultdict):
        out = ["D"]
        for k, v in dict.items(value):
            out.append(encode(k, objects, d))
            out.append(encode(v, objects, d))
        return out
    if t is set or t is frozenset:
        return ["S" if t is set else "F", *[encode(v, objects, d) for v in value]]
    if t is bytes:
        return ["B", value.hex()]
    if t is complex:
        return ["C", value.real, value.imag]
    if t.__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "biufc":
        if hasattr(value, "shape") and t.__name__ == "ndarray":
            return ["N", value.dtype.str, list(value.shape), encode(value.tolist(), None, d)]
        return ["n", value.dtype.str, encode(value.item(), None, d)]
    for base, tag in ((bool, None), (int, None), (float, None), (str, None), (tuple, "T"), (list, "L"),
                      (dict, "D")):   # subclasses cross as the value of their builtin base
        if isinstance(value, base):
            if tag is None:
                return encode(base(value), objects, d)
            return encode(base(value) if tag != "D" else dict(dict.items(value)), objects, d)
    if t is _RemoteObject:       # the judge passing back a handle it was given
        return ["O", object.__getattribute__(value, "_id"), ""]
    if objects is not None:
        objects.append(value)
        return ["O", len(objects) - 1, _one_line(t.__qualname__, 80)]
    raise TypeError(f"result of type {t.__qualname__} is not plain data (use builtin types)")


def decode(x, handle=None, depth=0):
    """The inverse of encode, strict: anything malformed raises Garbage. handle(id, type name) builds the judge's
    stand-in for an opaque handle; None refuses handles."""
    t = type(x)
    if t in _SCALAR_TYPES or t is int:
        return x
    if t is not list or not x or type(x[0]) is not str or depth > 100:
        raise Garbage(f"not an encoded value: {_clip(repr(x), 80)}")
    tag, d = x[0], depth + 1
    try:
        if tag in "LTSF" and len(tag) == 1:
            items = x[1:] if all(type(v) in _SCALAR_TYPES or type(v) is int for v in x[1:]) else \
                [decode(v, handle, d) for v in x[1:]]
            return items if tag == "L" else tuple(items) if tag == "T" else set(items) if tag == "S" else \
                frozenset(items)
        if tag == "D" and len(x) % 2 == 1:
            return {decode(x[i], handle, d): decode(x[i + 1], handle, d) for i in range(1, len(x), 2)}
        if tag == "I" and len(x) == 2 and type(x[1]) is str and len(x[1]) < 1 << 20:
            return int(x[1], 16)
        if tag == "B" and len(x) == 2 and type(x[1]) is str:
            return bytes.fromhex(x[1])
        if tag == "C" and len(x) == 3 and all(type(v) in (int, float) for v in x[1:]):
            return complex(x[1], x[2])
        if tag in ("N", "n") and type(x[1]) is str and x[1][1:2] in tuple("biufc"):
            import numpy
            dtype = numpy.dtype(x[1])
            if tag == "n" and len(x) == 3:
                return dtype.type(decode(x[2], None, d))
            if len(x) == 4 and type(x[2]) is list and all(type(n) is int and n >= 0 for n in x[2]):
                return numpy.array(decode(x[3], None, d), dtype=dtype).reshape(x[2])
        if tag == "O" and handle is not None and len(x) == 3 and type(x[1]) is int and type(x[2]) is str:
            return handle(x[1], x[2])
    except Garbage:
        raise
    except Exception as e:       # unhashable set members, bad hex, a shape that does not fit, ...
        raise Garbage(f"malformed {tag!r} value: {_describe(e)}") from None
    raise Garbage(f"not an encoded value: {_clip(repr(x), 80)}")


def parse_answer(body, handle=None):
    """A program's answer frame -> ("R", value, copied-back args) | ("E", [exception class names], message) |
    ("X", exit code repr) | ("S", syntax error) | ("ok", names). Raises Garbage for anything else."""
    try:
        msg = json.loads(body)
    except Exception as e:      # not UTF-8, not JSON, nested too deep for the parser
        raise Garbage(f"unreadable answer: {_describe(e)}") from None
    if type(msg) is not list or not msg or type(msg[0]) is not str:
        raise Garbage("unreadable answer")
    tag = msg[0]
    if tag == "R" and len(msg) == 3 and type(msg[2]) is list:
        copied = []
        for pair in msg[2]:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not int:
                raise Garbage("malformed copied-back argument")
            copied.append((pair[0], decode(pair[1], handle)))
        return "R", decode(msg[1], handle), copied
    if tag == "E" and len(msg) == 3 and type(msg[1]) is list and 0 < len(msg[1]) <= 64 and \
            all(type(n) is str and n.isidentifier() for n in msg[1]) and type(msg[2]) is str:
        return "E", msg[1], _one_line(msg[2], 1000)
    if tag in ("X", "S") and len(msg) == 2 and type(msg[1]) is str:
        return tag, _one_line(msg[1], 300)
    if tag == "ok" and len(msg) == 2 and type(msg[1]) is list and all(type(n) is str for n in msg[1]):
        return "ok", msg[1]
    raise Garbage(f"unreadable answer tagged {_clip(tag, 20)!r}")


def _error_status(names):
    return "memory" if names[0] == "MemoryError" else "runtime_error"



# --------------------------------------------------------------------------------------------------------------
# Zygote side: a clean interpreter (spawned with a scrubbed environment) that forks one child per run. It never
# receives test code or expected outputs, so no run can find them in the memory it was forked from.

# Imported once here so every forked run finds them loaded (fast) and so the harness can tell classes that existed
# before the program ran from classes the program made. Missing optional modules are simply skipped.
PRELOAD = ("math cmath decimal fractions statistics random itertools functools operator collections heapq bisect "
           "re string json copy typing dataclasses datetime enum numbers array struct hashlib io textwrap unittest "
           "unittest.mock contextlib abc types queue threading numpy numpy.testing").split()

HARMLESS_DUNDERS = frozenset(
    "__init__ __new__ __repr__ __str__ __format__ __doc__ __module__ __qualname__ __dict__ __weakref__ __slots__ "
    "__annotations__ __match_args__ __init_subclass__ __class_getitem__ __getnewargs__ __getnewargs_ex__ "
    "__reduce__ __reduce_ex__ __getstate__ __setstate__ __copy__ __deepcopy__ __del__ __set_name__ __orig_bases__ "
    "__parameters__ __dataclass_fields__ __dataclass_params__ __firstlineno__ __static_attributes__ "
    "__abstractmethods__ __enter__ __exit__ __hash__".split())


def _preload():
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:
            pass


def zygote_main(uid, sandbox, judge_fd):
    # No PR_SET_PDEATHSIG here: it fires when the parent *thread* that spawned us exits, and pools are (re)started
    # from worker threads. EOF on stdin, which comes when the runner exits or dies, ends us instead.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)          # orphans of a run come back to us, so none escapes the sweep
    judge = socket.socket(fileno=judge_fd)
    _preload()
    mode = _setup_zygote_isolation(uid, sandbox)
    state = {"mode": mode, "modules": _snapshot_modules(), "classes": _all_classes(),
             "library_dirs": _library_dirs(),
             "pidns": os.open("/proc/self/ns/pid", os.O_RDONLY) if mode["pid_ns"] else None,
             "base_vm": _vm_size(), "runs": 0}
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()

    def ask_parent(message):
        _send(out_fd, message)
        answer = _recv(in_fd)
        if answer is None:
            _zygote_exit(mode)
        return answer["go_on"]

    _send(out_fd, {"isolation": mode["description"]})
    while True:
        request = _recv(in_fd)
        if request is None:
            _zygote_exit(mode)
        handed = [False]
        try:
            end = run_job_in_zygote(request, state, ask_parent, judge, handed)
        except Exception as e:  # a bug of ours: never a verdict on the model
            import traceback
            end = {"error": {"status": "harness_error",
                             "detail": f"runner error: {e!r} {traceback.format_exc(limit=3)[-400:]}"}}
        if request["tests"]["type"] == "judged" and not handed[0]:
            socket.send_fds(judge, [b"n"], [])      # the judge is waiting for this run's pipes: there are none
        _send(out_fd, {"end": end})


def _zygote_exit(mode):
    for cgroup in mode["cgroups"].values():
        try:
            os.rmdir(cgroup["name"], dir_fd=cgroup["dir"])
        except OSError:
            pass
    os._exit(0)


def _setup_zygote_isolation(uid, sandbox):
    """Decide, by trying, which isolation this machine allows, and set up what all runs of this zygote share: the
    network namespace, the cgroups and the read-only root. The description is what users see."""
    mode = {"pid_ns": False, "mount_ns": False, "net_ns": False, "uid": None, "hidepid": False, "cgroups": {},
            "scratch_base": None, "seccomp": False}
    root = os.geteuid() == 0 and _libc is not None and sandbox == "auto"
    if root:
        try:
            _unshare(CLONE_NEWNET | CLONE_NEWUTS)
            mode["net_ns"] = True
        except OSError:
            pass
        mode["pid_ns"] = _probe_pid_namespace()
        mode["cgroups"] = _make_cgroups()
        try:
            _unshare(CLONE_NEWNS)
            mode["hidepid"] = _private_root()
            mode["mount_ns"] = _probe(lambda: _run_mounts(0))
        except OSError:
            pass
        if mode["mount_ns"] or not _unreachable_library_dirs():
            mode["uid"] = uid
        if KEYRING_SYSCALLS:
            keyring = _keyring_filter()
            mode["seccomp"] = keyring if _probe(lambda: _refuse_keyring(keyring)) else False
    if not mode["mount_ns"]:
        # Fallback: each run gets a fresh directory in the host's temp dir, removed after the run. Directories of
        # runners that died are removed when a zygote starts.
        base = tempfile.gettempdir()
        for entry in os.listdir(base):
            lock = _claim(os.path.join(base, entry)) if entry.startswith("recode-exec-") else None
            if lock is not None:
                os.close(lock)
                _remove_tree(os.path.join(base, entry))
        mode["scratch_base"] = base
    tempfile.tempdir = None     # do not let the snapshot of tempfile remember a temp dir: runs must use their TMPDIR
    parts = ["a PID namespace per run (killing its PID 1 kills everything it started)" if mode["pid_ns"] else
             "no PID namespace: subreaper sweep of the run's processes"]
    if mode["mount_ns"]:
        parts.append("per run a fresh mount and IPC namespace: a read-only root with only the Python install and "
                     "system libraries, fresh tmpfs for cwd, /tmp and /dev/shm"
                     + (", /proc showing a run only its own processes" if mode["hidepid"] else ""))
    else:
        parts.append("NO PRIVATE ROOT: the host's files are visible, a fresh temp dir per run as cwd")
    parts.append("empty network namespace" if mode["net_ns"] else "NETWORK NOT ISOLATED")
    parts.append(f"unprivileged uid per worker (RLIMIT_NPROC={PROCESSES} binds)" if mode["uid"] is not None
                 else "same uid as the caller: process cap not enforceable, programs can signal your processes")
    parts.append(f"cgroup per worker capping each run's memory and processes ({', '.join(sorted(mode['cgroups']))})"
                 if mode["cgroups"] else "no cgroup: memory capped per process only")
    if mode["seccomp"]:
        parts.append("keyring syscalls refused (seccomp)")
    mode["description"] = "; ".join(parts) + "; hard rlimits AS/FSIZE/NOFILE/CORE/CPU; wall-clock SIGKILL"
    return mode


def _claim(path, dir_fd=None):
    """An fd holding an exclusive flock on the directory path, or None if another live runner holds it. Runners
    hold their cgroups' and run directories' locks while they live, so a directory that can be claimed is a dead
    runner's, whatever PID namespace either runner is in."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _make_cgroups():
    """A cgroup of our own below our cgroup, per controller (v1 'memory' and 'pids', or v2 with both), used by one
    run at a time. Opened before the root is replaced: the runs join it through the inherited fds."""
    found = {}
    try:
        with open("/proc/self/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return {}
    name = f"recode-{os.getpid()}-{os.urandom(4).hex()}"
    for hierarchy, controllers, path in lines:
        for ctrl in ("memory", "pids"):
            if ctrl in controllers.split(",") and ctrl not in found:
                base = f"/sys/fs/cgroup/{ctrl}{path}"
                cg = _open_cgroup(base, name, ctrl == "memory" and "memory.limit_in_bytes" or "pids.max")
                if cg:
                    found[ctrl] = cg
    if not found and any(h == "0" for h, _, _ in lines):
        path = next(p for h, _, p in lines if h == "0")
        for ctrl, knob in (("memory", "memory.max"), ("pids", "pids.max")):
            cg = _open_cgroup(f"/sys/fs/cgroup{path}", name, knob, shared=found.get("memory"))
            if cg:
                found[ctrl] = cg
    if "pids" in found:
        try:
            os.write(found["pids"]["limit"], str(PROCESSES).encode())
        except OSError:
            del found["pids"]
    return found


def _open_cgroup(base, name, knob, shared=None):
    try:
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    for entry in os.listdir(dir_fd):      # cgroups of runners that died
        lock = _claim(entry, dir_fd) if entry.startswith("recode-") and entry != name else None
        if lock is not None:
            os.close(lock)
            try:
                os.rmdir(entry, dir_fd=dir_fd)
            except OSError:
                pass
    try:
        if shared is None:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        lock = _claim(name, dir_fd) if shared is None else shared["lock"]
        if lock is None:
            raise OSError("cannot lock our own cgroup")
        cg = {"dir": dir_fd, "name": name, "lock": lock,
              "procs": os.open(f"{base}/{name}/cgroup.procs", os.O_WRONLY),
              "limit": os.open(f"{base}/{name}/{knob}", os.O_WRONLY)}
        return cg
    except OSError:
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError:
            pass
        return None


def _host_paths():
    """What a run sees of the host: system binaries and libraries, /etc, and the Python install (stdlib, the venv,
    site-packages); the rest of the filesystem (the caller's data, the jobs file, /tmp, /run) is absent."""
    paths = {p for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc") if os.path.lexists(p)}
    for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)] + sys.path:
        if p and os.path.isdir(p):
            paths.add(os.path.abspath(p))
            paths.add(os.path.realpath(p))
    paths = sorted(paths)
    return [p for p in paths if not any(p.startswith(q.rstrip("/") + "/") for q in paths if q != p
                                        and not os.path.islink(q))]


def _private_root():
    """Inside the zygote's own mount namespace: a read-only root on a small tmpfs holding bind mounts of
    _host_paths() (read-only), a few device nodes, a /proc, and empty mount points for the runs' tmpfs; then
    pivot_root into it, so the old root is gone from this namespace. Returns whether /proc hides other uids."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Held open before the new root covers /tmp, so that a Python install under /tmp can still be bound from them.
    host = [(path, os.readlink(path) if os.path.islink(path) else os.open(path, os.O_PATH)) for path in _host_paths()]
    new = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    _mount("tmpfs", new, "tmpfs", MS_NOSUID, "size=1m,mode=0755")
    for path, link_or_fd in host:
        per_run = any(path.startswith(prefix) for prefix in PER_RUN)
        target = new + (STASH + path if per_run else path)
        if type(link_or_fd) is str:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(link_or_fd, target)
        else:
            os.makedirs(target, exist_ok=True)
            _mount(f"/proc/self/fd/{link_or_fd}", target, None, MS_BIND | MS_REC)
            os.close(link_or_fd)
            _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        if per_run:
            _stashed.append(path)
    # One tmpfs per run, mounted at /.run, holds the run's cwd, /tmp and /dev/shm (each mount a run makes costs
    # time at its start and its end); the root points at them with symlinks.
    os.makedirs(new + "/dev")
    for node in ("null", "zero", "full", "random", "urandom", "tty"):
        if os.path.exists("/dev/" + node):
            try:        # a device node of our own (no mount to copy per run), else a bind of the host's
                os.mknod(f"{new}/dev/{node}", 0o666 | stat.S_IFCHR, os.stat("/dev/" + node).st_rdev)
                os.chmod(f"{new}/dev/{node}", 0o666)
            except OSError:
                open(f"{new}/dev/{node}", "w").close()
                _mount("/dev/" + node, f"{new}/dev/{node}", None, MS_BIND)
    for link, to in (("dev/fd", "/proc/self/fd"), ("dev/stdin", "/proc/self/fd/0"), ("dev/stdout", "/proc/self/fd/1"),
                     ("dev/stderr", "/proc/self/fd/2"), ("dev/shm", RUN_DIR + "/shm"), ("tmp", RUN_DIR + "/tmp"),
                     (RUN_CWD[1:], RUN_DIR + "/cwd")):
        os.symlink(to, f"{new}/{link}")
    for d in ("proc", RUN_DIR[1:], ".old"):
        os.makedirs(f"{new}/{d}", exist_ok=True)
    try:
        _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        hidepid = True
    except OSError:
        _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        hidepid = False
    os.chdir(new)
    if SYS_PIVOT_ROOT is not None and _libc.syscall(SYS_PIVOT_ROOT, b".", b".old") == 0:
        os.chdir("/")
        _check(_libc.umount2(b"/.old", MNT_DETACH), "umount /.old")
        os.rmdir("/.old")
    else:
        os.chroot(".")
        os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID, "size=1m,mode=0755")
    return hidepid


def _probe(setup):
    """Fork a throwaway child that does setup() the way every run does; True if it worked."""
    pid = os.fork()
    if pid == 0:
        try:
            setup()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _run_mounts(uid):
    """A run's own mount and IPC namespace with a fresh tmpfs for cwd, /tmp and /dev/shm: gone with the run. A Python
    install under /tmp or /dev/shm is bound back, read-only, at its own path in the run's /tmp or /dev/shm."""
    _unshare(CLONE_NEWNS | CLONE_NEWIPC)
    _mount("tmpfs", RUN_DIR, "tmpfs", MS_NOSUID | MS_NODEV, f"size={SCRATCH_MB}m,mode=0755")
    for name, mode in (("cwd", 0o700), ("tmp", 0o1777), ("shm", 0o1777)):
        os.mkdir(f"{RUN_DIR}/{name}")
        os.chmod(f"{RUN_DIR}/{name}", mode)
        os.chown(f"{RUN_DIR}/{name}", uid, uid)
    for path in _stashed:
        prefix = next(p for p in PER_RUN if path.startswith(p))
        target = PER_RUN[prefix] + path[len(prefix):]
        os.makedirs(target, 0o755)
        _mount(STASH + path, target, None, MS_BIND | MS_REC)
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


_stashed = []       # host paths of the Python install under a PER_RUN prefix (set in the zygote by _private_root)


def _probe_pid_namespace():
    """Fork a throwaway child as PID 1 of a new PID namespace, the way every run starts; True if it worked."""
    try:
        _unshare(CLONE_NEWPID)
    except OSError:
        return False
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        ns_fd = os.open(f"/proc/{os.getpid()}/ns/pid", os.O_RDONLY)
        _check(_libc.setns(ns_fd, CLONE_NEWPID), "setns")
        os.close(ns_fd)
    except OSError:
        os.waitpid(pid, 0)
        return False
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _unreachable_library_dirs():
    """Directories Python imports from that an unprivileged uid cannot reach (e.g. a pyenv install under a 0700
    /root), as (closed ancestor, [dirs below it]) pairs."""
    needed = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    needed = sorted(p for p in needed if not any(p.startswith(q + os.sep) for q in needed))
    hidden = {}
    for path in needed:
        ancestor = "/"
        for part in path.strip("/").split("/")[:-1]:
            ancestor = os.path.join(ancestor, part)
            if not os.stat(ancestor).st_mode & 0o001:     # others may not traverse it
                hidden.setdefault(ancestor, []).append(path)
                break
    return sorted(hidden.items())


def _remove_tree(path):
    """Remove a directory tree of any depth and any permissions the run gave it: subdirectories are moved up to
    the top, so neither the recursion limit, nor PATH_MAX, nor the open-file limit is ever reached."""
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:
        os.unlink(path)
        return
    try:
        serial = 0
        while True:
            os.chmod(top, 0o700)
            entries = list(os.scandir(top))
            if not entries:
                break
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=top)
                    continue
                try:
                    os.rmdir(entry.name, dir_fd=top)
                    continue
                except OSError:
                    pass
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                try:
                    os.chmod(sub, 0o700)
                    for child in os.listdir(sub):
                        serial += 1
                        os.rename(child, f".up{serial}", src_dir_fd=sub, dst_dir_fd=top)
                finally:
                    os.close(sub)
    finally:
        os.close(top)
    os.rmdir(path)


def _vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _snapshot_modules():
    """name -> (module, copy of its namespace, [(class, copy of its namespace)] for the Python classes it defines),
    for every module loaded before any program runs. The classes matter: unittest.TestCase.assertEqual lives there."""
    snapshot = {}
    for name, module in list(sys.modules.items()):
        if module is None or not hasattr(module, "__dict__"):
            continue
        classes = [(c, dict(vars(c))) for c in list(vars(module).values()) if isinstance(c, type)
                   and c.__flags__ & (1 << 9) and getattr(c, "__module__", None) == name]
        snapshot[name] = (module, dict(module.__dict__), classes)
    return snapshot


def _all_classes():
    seen, stack = set(), [object]
    while stack:
        cls = stack.pop()
        seen.add(cls)
        try:
            stack.extend(c for c in type.__subclasses__(cls) if c not in seen)
        except TypeError:
            pass
    return frozenset(seen)


def _library_dirs():
    import sysconfig
    dirs = {os.path.realpath(p) for key, p in sysconfig.get_paths().items() if key in
            ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {os.path.realpath(p) for p in sys.path if "site-packages" in p or "dist-packages" in p}
    return tuple(sorted(d + os.sep for d in dirs))


def run_job_in_zygote(request, state, ask_parent, judge, handed):
    """Run one job's sandboxed runs. call/stdio: report each case through ask_parent(message) -> go on?; judged
    kinds: hand the run's pipes to the judge and watch the run. Returns the end message."""
    code, tests = request["code"], request["tests"]
    limits = {"timeout": request["timeout"], "memory_mb": request["memory_mb"],
              "case_timeouts": [c.get("timeout", request["timeout"]) for c in tests.get("cases", [])]}
    kind = tests["type"]
    if kind == "stdio":     # one fresh run per case, real stdin through a pipe
        for index, case in enumerate(tests["cases"]):
            run = _Run(state, "stdio", code, dict(limits, case_timeouts=[limits["case_timeouts"][index]]),
                       case["input"].encode())
            outcome = run.watch(time.monotonic() + limits["case_timeouts"][index] + 1.0)
            error = run.stdio_error(outcome)
            if error and error["status"] in ("syntax_error", "harness_error"):
                return {"error": error}
            if not ask_parent({"index": index, "error": error, "stdout": run.stdout_text()}):
                break
        return {}
    if kind == "call":
        return _drive_call(code, tests, limits, state, ask_parent)
    # judged: the program's run serves the judge, which received the test program from the parent
    run = _Run(state, "serve", code, limits)
    socket.send_fds(judge, [b"p"], [run.req_w, run.ans_r])
    handed[0] = True
    run.hand_off()
    outcome = run.watch(time.monotonic() + limits["timeout"] + 1.0)
    end = {"exit": run.exit_code, "timed_out": outcome == "timeout", "limit": limits["timeout"],
           "stderr": run.stderr_text()[-300:]}
    if not run.ready and outcome != "timeout":
        end["error"] = {"status": "harness_error", "detail": f"sandbox setup failed: {run.stderr_text()[-300:]}"}
    return end


def _drive_call(code, tests, limits, state, ask_parent):
    """One run for all cases: send case i, read exactly one answer, decode it, report it as case i's. With
    "sample_timeout" the whole run, the program's loading included, also has that many seconds (EvalPlus's cap)."""
    cap = tests.get("sample_timeout")
    sample_end = time.monotonic() + cap if cap else math.inf
    typed = tests.get("compare") == "evalplus"
    run = _Run(state, "serve", code, limits)
    try:
        run.send(["call", tests["fn_name"]])
        hello = run.answer(min(time.monotonic() + limits["timeout"] + 1.0, sample_end))
        if not run.ready and hello in (None, "timeout"):
            return {"error": {"status": "harness_error" if hello is None else "timeout",
                              "detail": f"sandbox setup failed: {run.stderr_text()[-300:]}" if hello is None
                              else "timed out before starting"}}
        error = _answer_error(run, hello, before_tests=True)
        if error is None:
            try:
                tag = parse_answer(hello)[0]
                error = None if tag == "ok" else {"status": "runtime_error", "detail": f"unexpected answer {tag!r}"}
            except Garbage as e:
                error = {"status": "runtime_error", "detail": str(e)}
        if error:
            return {"error": error}
        for index, case in enumerate(tests["cases"]):
            if run.ans_buf:
                message = {"index": index, "error": {"status": "runtime_error",
                                                     "detail": "the program answered before it was asked"}}
                ask_parent(message)
                return {}
            start = time.monotonic()
            run.send(["case", case])
            deadline = start + limits["case_timeouts"][index]
            body = run.answer(min(deadline, sample_end))
            seconds = time.monotonic() - start
            error = _answer_error(run, body, limit=limits["case_timeouts"][index])
            if body == "timeout" and sample_end < deadline:
                error["detail"] = f"the sample exceeded its {cap:g} s limit (all cases together)"
            value = None
            if error is None:
                value, error = _call_value(body, typed)
            stop = error is not None and error.get("fatal")
            if error:
                error.pop("fatal", None)
            if not ask_parent({"index": index, "error": error, "value": value, "seconds": seconds}) or stop:
                break
        return {}
    finally:
        run.finish()


def _answer_error(run, body, before_tests=False, limit=None):
    """The failure when no answer came: a timeout, a crash, an answer too large. None when there is an answer."""
    if body == "timeout":
        return {"status": "timeout", "fatal": True, "detail": f"exceeded the {limit or run.limits['timeout']:g} s limit"}
    if body == "too_large":
        return {"status": "runtime_error", "fatal": True, "detail": f"answer larger than {ANSWER_LIMIT} bytes"}
    if body is None:
        run.finish()
        ended = _how_it_ended({"exit": run.exit_code, "stderr": run.stderr_text()})
        if ended["status"] == "failed":
            ended["detail"] = ended["detail"].replace("tests finished", "tests reported")
        return dict(ended, fatal=True)
    return None


def _call_value(body, typed=False):
    """Decode one call answer into the caller's plain data (an output too big to ship becomes a digest), or with
    typed, into the typed encoding of what was decoded (shipped whole: a digest could not be compared EvalPlus's
    way, within a tolerance or by ==)."""
    try:
        answer = parse_answer(body)
    except Garbage as e:
        return None, {"status": "runtime_error", "detail": str(e)}
    if answer[0] == "E":
        return None, {"status": _error_status(answer[1]), "detail": _one_line(f"{answer[1][0]}: {answer[2]}")}
    if answer[0] == "X":
        return None, {"status": "runtime_error", "detail": f"exit({answer[1]}) during the call"}
    if answer[0] != "R":
        return None, {"status": "runtime_error", "detail": f"unexpected answer {answer[0]!r}"}
    try:
        if typed:
            return encode(answer[1]), None
        plain = to_plain(answer[1])
        text = json.dumps(plain)
    except (TypeError, ValueError) as e:
        return None, {"status": "runtime_error", "detail": _describe(e)}
    if len(text) > DIGEST_ABOVE:
        canonical = json.dumps(plain, sort_keys=True).encode()
        plain = {"sha256": hashlib.sha256(canonical).hexdigest(), "json_bytes": len(canonical)}
    return plain, None


class _Run:
    """One sandboxed child and the zygote's watch over it: its pipes, its deadline, its end."""

    def __init__(self, state, role, code, limits, stdin_data=b""):
        self.state, self.limits, self.role = state, limits, role
        mode = state["mode"]
        pipes = [os.pipe() for _ in range(6 if role == "serve" else 4)]  # stdin, stdout, stderr, ready[, req, ans]
        self.scratch = None
        if mode["scratch_base"]:
            state["runs"] += 1
            self.scratch = tempfile.mkdtemp(prefix=f"recode-exec-{os.getpid()}-{state['runs']}-",
                                            dir=mode["scratch_base"])
            self.scratch_lock = _claim(self.scratch)     # held until the directory is removed
            if mode["uid"] is not None:
                os.chown(self.scratch, mode["uid"], mode["uid"])
        memory = mode["cgroups"].get("memory")
        if memory:
            try:
                os.write(memory["limit"], str((limits["memory_mb"] + CGROUP_SLACK_MB) << 20).encode())
            except OSError:
                pass
        if mode["pid_ns"]:
            _unshare(CLONE_NEWPID)              # our next child becomes PID 1 of a new namespace
        gc.freeze()   # the child's garbage collections then skip our objects instead of copying every page they touch
        pid = os.fork()
        if pid == 0:
            child_ends = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
            if role == "serve":
                child_ends += [pipes[4][0], pipes[5][1]]
            _child(role, code, child_ends, limits, state, self.scratch)
            os._exit(71)   # not reached: _child always exits
        if mode["pid_ns"]:
            _check(_libc.setns(state["pidns"], CLONE_NEWPID), "setns")  # later forks of ours stay in our namespace
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        (in_r, self.in_w), (self.out_r, out_w), (self.err_r, err_w), (self.ready_r, ready_w) = pipes[:4]
        for fd in (in_r, out_w, err_w, ready_w):
            os.close(fd)
        self.req_w = self.ans_r = None
        if role == "serve":
            (req_r, self.req_w), (self.ans_r, ans_w) = pipes[4:]
            os.close(req_r), os.close(ans_w)
            os.set_blocking(self.req_w, False)
        self.pending = {}             # fd -> bytes still to write
        if stdin_data:
            self.pending[self.in_w] = memoryview(stdin_data)
            os.set_blocking(self.in_w, False)
        else:
            os.close(self.in_w)
            self.in_w = None
        self.reading = {self.out_r, self.err_r, self.ready_r} | ({self.ans_r} if self.ans_r is not None else set())
        self.stdout, self.stderr, self.ready_buf, self.ans_buf = bytearray(), bytearray(), bytearray(), bytearray()
        self.overflow, self.exited, self.exit_code, self.finished = False, False, None, False

    @property
    def ready(self):
        return self.ready_buf.startswith(b"R") or self.ready_buf.startswith(b"S")

    def hand_off(self):
        """The judge now holds the request and answer pipes: drop ours, so the run sees EOF when the judge is done."""
        os.close(self.req_w), os.close(self.ans_r)
        self.reading.discard(self.ans_r)
        self.req_w = self.ans_r = None

    def send(self, message):
        data = _frame(json.dumps(message).encode())
        self.pending[self.req_w] = memoryview(bytes(self.pending.get(self.req_w, b"")) + data)

    def answer(self, deadline):
        """The next answer frame's body, or "timeout", "too_large", or None when the run ended without one."""
        while True:
            if len(self.ans_buf) >= 8:
                n = struct.unpack("<Q", self.ans_buf[:8])[0]
                if n > ANSWER_LIMIT:
                    return "too_large"
                if len(self.ans_buf) >= 8 + n:
                    body = bytes(self.ans_buf[8:8 + n])
                    del self.ans_buf[:8 + n]
                    return body
            if self.exited or self.ans_r not in self.reading:
                return None
            if self._pump(deadline) == "timeout":
                return "timeout"

    def watch(self, deadline):
        """Until the run ends ("exited") or the deadline ("timeout"); then kill whatever is left."""
        outcome = "exited"
        while not self.exited and not self.overflow:
            if self._pump(deadline) == "timeout":
                outcome = "timeout"
                break
        self.finish()
        return outcome

    def _pump(self, deadline):
        wait = deadline - time.monotonic()
        if wait <= 0:
            return "timeout"
        writers = [fd for fd in self.pending if self.pending[fd]]
        readable, writable, _ = select.select(list(self.reading) + [self.pidfd], writers, [], wait)
        for fd in writable:
            try:
                self.pending[fd] = self.pending[fd][os.write(fd, self.pending[fd][:1 << 16]):]
            except BlockingIOError:
                pass
            except OSError:       # the run closed its end: what it did not read is its loss
                self.pending[fd] = memoryview(b"")
            if fd == self.in_w and not self.pending[fd]:
                del self.pending[fd]
                os.close(fd)
                self.in_w = None
        for fd in readable:
            if fd != self.pidfd:
                self._read(fd)
        if self.pidfd in readable:
            # Once the child has exited, everything it wrote is in the pipes: read what is there and stop waiting,
            # even if a leftover process of its own still holds a pipe open (the sweep kills it next).
            self.exited = True
            self._drain()
        return None

    def _drain(self):
        """Read whatever the pipes hold now, without waiting."""
        for fd in list(self.reading):
            os.set_blocking(fd, False)
            try:
                while fd in self.reading and self._read(fd):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _read(self, fd):
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            self.reading.discard(fd)
            return False
        if fd == self.err_r:
            self.stderr.extend(chunk)
            del self.stderr[:-STDERR_KEEP]
        elif fd == self.out_r:
            if len(self.stdout) < STDOUT_LIMIT:
                self.stdout.extend(chunk[:STDOUT_LIMIT - len(self.stdout)])
            elif self.role == "stdio":
                self.overflow = True
        elif fd == self.ready_r:
            self.ready_buf.extend(chunk[:4096 - len(self.ready_buf)])
        else:
            self.ans_buf.extend(chunk)
            if len(self.ans_buf) > ANSWER_LIMIT + 8:
                self.reading.discard(fd)      # "too_large" is decided from the header
        return True

    def finish(self):
        if self.finished:
            return
        self.finished = True
        self.exit_code = _kill_run(self.pid, self.state)
        os.close(self.pidfd)
        self._drain()
        for fd in (self.out_r, self.err_r, self.ready_r, self.in_w, self.req_w, self.ans_r):
            if fd is not None:
                os.close(fd)
        self.in_w = self.req_w = self.ans_r = None
        self.reading = set()
        if self.scratch:
            _remove_tree(self.scratch)
            if self.scratch_lock is not None:
                os.close(self.scratch_lock)

    def stdout_text(self):
        return self.stdout.decode(errors="replace")

    def stderr_text(self):
        return self.stderr.decode(errors="replace")

    def stdio_error(self, outcome):
        """A stdio run's failure, from how it ended (the program's exit status and stderr: nothing else)."""
        if not self.ready:
            return ({"status": "timeout", "detail": "timed out before starting"} if outcome == "timeout" else
                    {"status": "harness_error", "detail": f"sandbox setup failed: {self.stderr_text()[-300:]}"})
        if self.ready_buf.startswith(b"S"):
            return {"status": "syntax_error", "detail": _one_line(self.ready_buf[1:].decode(errors="replace"))}
        if outcome == "timeout":
            return {"status": "timeout", "detail": f"exceeded the {self.limits['case_timeouts'][0]:g} s limit"}
        if self.overflow:
            return {"status": "runtime_error", "detail": f"printed more than {STDOUT_LIMIT} bytes"}
        if self.exit_code == 0:
            return None
        tail = self.stderr_text().strip().splitlines()[-1:]
        if self.exit_code == 3:
            return {"status": "memory", "detail": _one_line(tail[0] if tail else "MemoryError")}
        if self.exit_code == 1 and tail:
            return {"status": "runtime_error", "detail": _one_line(tail[0])}
        return dict(_how_it_ended({"exit": self.exit_code, "stderr": self.stderr_text()}), status="runtime_error") \
            if self.exit_code > 0 else _how_it_ended({"exit": self.exit_code})


def _kill_run(pid, state):
    """SIGKILL the run and everything it started; return the run's exit code (negative: killed by that signal)."""
    try:
        os.kill(pid, signal.SIGKILL)    # in namespaced mode this is PID 1: the kernel kills the whole namespace
    except ProcessLookupError:
        pass
    exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if state["mode"]["pid_ns"]:
        _reap_others()
        return exit_code
    if state["mode"]["uid"] is not None:
        # kill(-1) from the program's own uid reaches every process of that uid and nothing else; fork is blocked
        # while the kernel walks the task list, so a fork bomb cannot outrun it.
        killer = os.fork()
        if killer == 0:
            try:
                os.setgid(state["mode"]["uid"])
                os.setuid(state["mode"]["uid"])
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(killer, 0)
    else:
        for _ in range(100):   # orphans come back to us (subreaper): kill our children until none is left
            children = _children_of(os.getpid())
            if not children:
                break
            for child in children:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap_others()
    _reap_others()
    return exit_code


def _children_of(parent):
    kids = set()
    for task in os.listdir(f"/proc/{parent}/task"):
        try:
            with open(f"/proc/{parent}/task/{task}/children") as f:
                kids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return kids


def _reap_others():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


# --------------------------------------------------------------------------------------------------------------
# Child side: lock the process down, then run the program. Everything below _child runs in the sandbox, and
# nothing it sends is believed except as the program's answer.

def _child(role, code, fds, limits, state, scratch):
    try:
        mode = state["mode"]
        for cgroup in mode["cgroups"].values():     # first, so every process the run makes is counted
            os.write(cgroup["procs"], b"0")
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        high = [os.dup(fd) for fd in fds]         # out of the way of the low numbers dup2 writes next
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 16)
        os.setsid()   # a session of its own: its own CPU autogroup, so a busy or forking run cannot starve others
        uid = mode["uid"] if mode["uid"] is not None else os.getuid()
        if mode["mount_ns"]:
            _run_mounts(uid)
            scratch = RUN_CWD
        budget = sum(limits["case_timeouts"]) or limits["timeout"]
        _limit(resource.RLIMIT_CPU, int(budget) + 2)     # backstop only: the parent's wall clock rules
        _limit(resource.RLIMIT_AS, state["base_vm"] + limits["memory_mb"] * (1 << 20))
        _limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
        _limit(resource.RLIMIT_NOFILE, OPEN_FILES)
        _limit(resource.RLIMIT_CORE, 0)
        if mode["seccomp"]:
            _refuse_keyring(mode["seccomp"])
        if mode["uid"] is not None:
            _limit(resource.RLIMIT_NPROC, PROCESSES)
            os.setgroups([])
            os.setgid(mode["uid"])
            os.setuid(mode["uid"])
        os.chdir(scratch)
        os.environ["HOME"] = os.environ["TMPDIR"] = scratch    # the rest is the zygote's environment: _clean_env()
        # Fresh text streams on the new fds; the zygote's own streams pointed at its protocol pipes.
        sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    except BaseException as e:
        os.write(2, f"sandbox setup: {e!r}\n".encode())
        os._exit(70)
    if role == "stdio":
        _stdio_main(code)
    try:
        _serve_main(code, state)
    finally:   # whatever the program raised or broke, this process never returns into the zygote's code
        os._exit(0)


def _limit(which, value):
    # hard = soft: a program cannot raise what it was given
    hard = resource.getrlimit(which)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def _stdio_main(code):
    """Run a stdin/stdout program. The zygote judges from its stdout and exit status only: 0 a normal end (also
    sys.exit(0)), 1 an exception (named on stderr), 3 MemoryError."""
    import builtins
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError) as e:
        os.write(3, b"S" + _one_line(f"{type(e).__name__}: {e}").encode(errors="replace"))
        os._exit(2)
    os.write(3, b"R")
    os.close(3)
    out, status, write = sys.stdout, 0, os.write
    try:
        exec(compiled, {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as e:
        if e.code not in (None, 0):     # a stdio program may end with sys.exit(0): that is a normal end
            status = 1
            write(2, f"\nSystemExit({e.code!r})\n".encode(errors="replace"))
    except MemoryError:
        status = 3
    except BaseException as e:
        status = 1
        try:
            write(2, f"\n{_describe(e)}\n".encode(errors="replace"))
        except BaseException:
            pass
    try:
        out.flush()
    except BaseException:
        pass
    os._exit(status)


def _serve_main(code, state):
    """Answer requests on fd 4 with frames on fd 5. The first request says what to do: ["call", fn_name] (the
    zygote drives call cases), ["serve"] (the judge calls the program's functions) or ["inproc", kind, program,
    test file] (the tests run here, and the verdict is marked in-process)."""
    import builtins
    read, write, dumps, loads = os.read, os.write, json.dumps, json.loads

    def receive():
        header = b""
        while len(header) < 8:
            chunk = read(4, 8 - len(header))
            if not chunk:
                os._exit(0)     # the judge or the zygote is done with us
            header += chunk
        n, body = struct.unpack("<Q", header)[0], bytearray()
        while len(body) < n:
            chunk = read(4, min(n - len(body), 1 << 20))
            if not chunk:
                os._exit(0)
            body.extend(chunk)
        return loads(body)

    def answer(message):
        data = memoryview(_frame(dumps(message).encode()))
        while data:
            data = data[write(5, data):]

    def error_answer(e):
        try:
            return ["E", [c.__name__ for c in type(e).__mro__][:64], _one_line(str(e), 1000)]
        except BaseException:
            return ["E", ["Exception"], "an exception that cannot be described"]

    os.write(3, b"R")
    os.close(3)
    first = receive()
    if first[0] == "inproc":
        answer(["done", _inprocess(code, first[1], first[2], first[3], state)])
        return
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError) as e:
        answer(["S", _one_line(f"{type(e).__name__}: {e}")])
        return
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)
        if first[0] == "call":
            fn_name = first[1]
            try:
                if isinstance(namespace.get("Solution"), type):    # LeetCode style, as LiveCodeBench does
                    fn = getattr(namespace["Solution"](), fn_name)
                else:
                    fn = namespace[fn_name]
            except BaseException as e:
                raise LookupError(f"cannot find {fn_name!r}: {_describe(e)}") from None
            names = []
        else:
            names = [n for n, v in list(namespace.items()) if type(n) is str and not n.startswith("__")
                     and callable(v)]
    except SystemExit as e:
        answer(["X", repr(e.code)])
        return
    except BaseException as e:
        answer(error_answer(e))
        return
    answer(["ok", names])
    objects = []
    handle = lambda i, _: objects[i]
    while True:
        request = receive()
        try:
            op = request[0]
            if op == "case":
                case = request[1]
                args = case["args"] if "args" in case else ast.literal_eval(case["args_py"])
                message = ["R", encode(fn(*args)), []]
            else:
                target = namespace[request[1]] if op == "call" else objects[request[1]]
                args = [decode(a, handle) for a in request[2]]
                kwargs = {k: decode(v, handle) for k, v in request[3].items()}
                if op in ("call", "callobj"):
                    value = target(*args, **kwargs)
                elif op == "getattr":
                    value = getattr(target, args[0])
                elif op == "getitem":
                    value = target[args[0]]
                elif op == "setattr":
                    value = setattr(target, args[0], args[1])
                elif op == "setitem":
                    target[args[0]] = args[1]
                    value = None
                else:
                    value = {"len": len, "list": list, "bool": bool, "repr": repr}[op](target)
                copied = [[i, encode(a, objects)] for i, a in enumerate(args) if type(a) in (list, dict, set)]
                message = ["R", encode(value, objects), copied]
        except SystemExit as e:
            message = ["X", repr(e.code)]
        except BaseException as e:
            message = error_answer(e)
        answer(message)


def _inprocess(code, kind, program, test_file, state):
    """Run the program, then its tests, here, with the defences of the first design (restore what the program
    patched, refuse values whose class defines its own comparisons). What is prepared before the program runs is
    bound to locals, so that what the program patches changes nothing here; but the verdict is only in-process."""
    import builtins
    run, restore = exec, _restore_interpreter
    untrace = (sys.settrace, sys.setprofile, threading.settrace, threading.setprofile)
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
    setsig, setitimer = signal.signal, signal.setitimer
    try:
        tests = _prepare_tests(program, test_file, kind, state)
    except SyntaxError as e:
        return ["harness_error", 0, 1, _one_line(f"test program does not parse: {e}")]
    guard = _make_guard(dict(state, test_file=test_file), test_file)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError) as e:
        return ["syntax_error", 0, 1, _one_line(f"{type(e).__name__}: {e}")]
    try:
        run(compiled, namespace)
    except SystemExit as e:
        return ["runtime_error", 0, 1, _one_line(f"the program called exit({e.code!r}) before the tests ran")]
    except BaseException as e:
        return [_status_of_error(_describe(e)), 0, 1, _describe(e)]
    for stop_tracing in untrace:
        stop_tracing(None)
    for which in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
        setitimer(which, 0)
    for signum, handler in handlers.items():
        try:
            setsig(signum, handler)
        except (OSError, ValueError, TypeError):
            pass
    problem = restore(tests["restore"])
    if problem:
        return ["runtime_error", 0, 1, problem]
    test_namespace = _test_namespace(namespace, tests, guard, state)
    if kind == "unittest":
        return _run_unittests(tests["code"], test_namespace)
    try:
        run(tests["code"], test_namespace)
        return ["passed", 1, 1, ""]
    except AssertionError as e:
        return ["failed", 0, 1, _assert_detail(e, test_file, program)]
    except SystemExit as e:
        return ["failed", 0, 1, _one_line(f"exit({e.code!r}) during the tests")]
    except BaseException as e:
        return [_status_of_error(_describe(e)), 0, 1, _describe(e)]


# --------------------------------------------------------------------------------------------------------------
# Judge side: a clean interpreter that runs test code and never runs program code. It runs each test program in a
# fresh namespace, reaching the program's functions through the run's request and answer pipes.

class _ProgramEnded(BaseException):
    """The program's process stopped answering (it exited, crashed or was killed): the zygote says how."""


class _ProgramExit(BaseException):
    """The program raised SystemExit (or KeyboardInterrupt) in a call."""


class _ProgramBroke(BaseException):
    """The program sent something that is not an answer."""


class _CannotCross(BaseException):
    """The test passes the program a value that is not data: the test needs the in-process path."""


_EXIT_NAMES = ("SystemExit", "KeyboardInterrupt", "GeneratorExit")


class _RPC:
    def __init__(self, req_w, ans_r):
        self.req_w, self.ans_r = req_w, ans_r
        self.ended, self.garbage, self.crossing, self.exit = False, None, None, None
        self.exception_classes = {}

    def send(self, message):
        try:
            _write_all(self.req_w, _frame(json.dumps(message).encode()))
        except OSError:
            self.ended = True
            raise _ProgramEnded from None

    def receive(self):
        header = _read_exact(self.ans_r, 8, None)
        if header is None:
            self.ended = True
            raise _ProgramEnded
        n = struct.unpack("<Q", header)[0]
        if n > ANSWER_LIMIT:
            self.garbage = f"answer larger than {ANSWER_LIMIT} bytes"
            raise _ProgramBroke
        body = _read_exact(self.ans_r, n, None)
        if body is None:
            self.ended = True
            raise _ProgramEnded
        return body

    def handle(self, i, type_name):
        return _RemoteObject(self, i, type_name)

    def call(self, op, target, args=(), kwargs=None):
        try:
            message = [op, target, [encode(a) for a in args], {str(k): encode(v) for k, v in (kwargs or {}).items()}]
        except (TypeError, ValueError) as e:
            self.crossing = _describe(e)
            raise _CannotCross from None
        self.send(message)
        try:
            answer = parse_answer(self.receive(), self.handle)
        except Garbage as e:
            self.garbage = str(e)
            raise _ProgramBroke from None
        if answer[0] == "R":
            for i, new in answer[2]:    # arguments the program mutated, copied back into the test's own objects
                old = args[i] if 0 <= i < len(args) else None
                if type(old) is list and type(new) is list:
                    old[:] = new
                elif type(old) in (dict, set) and type(new) is type(old):
                    old.clear()
                    old.update(new)
            return answer[1]
        if answer[0] == "X":
            self.exit = answer[1]
            raise _ProgramExit(answer[1])
        if answer[0] == "E":
            raise self.exception(answer[1], answer[2])
        self.garbage = f"unexpected answer {answer[0]!r}"
        raise _ProgramBroke

    def exception(self, names, message):
        """The judge's own exception for one the program raised: the first builtin class in its MRO, under the
        program's class name when that differs (so `except ValueError` catches a program's ValueError subclass)."""
        import builtins
        if names[0] in _EXIT_NAMES:
            self.exit = names[0]
            return _ProgramExit(message)
        base = next((b for b in (getattr(builtins, n, None) for n in names) if isinstance(b, type)
                     and issubclass(b, Exception) and b.__name__ not in ("BaseExceptionGroup", "ExceptionGroup")),
                    Exception)
        cls = base
        if base.__name__ != names[0]:
            cls = self.exception_classes.get((names[0], base))
            if cls is None:
                cls = self.exception_classes[names[0], base] = type(names[0], (base,), {})
        try:
            return cls(message)
        except Exception:
            return Exception(message)


class _Remote:
    """A program function or class, as the judge's test code sees it: calls go over the pipe."""

    def __init__(self, rpc, name):
        self._rpc, self.__name__, self.__qualname__ = rpc, name, name

    def __call__(self, *args, **kwargs):
        return self._rpc.call("call", self.__name__, args, kwargs)

    def __repr__(self):
        return f"<program function {self.__name__}>"


class _RemoteObject:
    """An object of the program that is not data (an instance of its class, a re.Match, a generator): an opaque
    handle. It compares by identity only; its attributes, items, length, truth and iteration go over the pipe."""
    __slots__ = ("_rpc", "_id", "_type")

    def __init__(self, rpc, i, type_name):
        object.__setattr__(self, "_rpc", rpc)
        object.__setattr__(self, "_id", i)
        object.__setattr__(self, "_type", type_name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._rpc.call("getattr", self._id, (name,))

    def __setattr__(self, name, value):
        self._rpc.call("setattr", self._id, (name, value))

    def __setitem__(self, key, value):
        self._rpc.call("setitem", self._id, (key, value))

    def __call__(self, *args, **kwargs):
        return self._rpc.call("callobj", self._id, args, kwargs)

    def __getitem__(self, key):
        return self._rpc.call("getitem", self._id, (key,))

    def _typed(self, op, want, what):
        value = self._rpc.call(op, self._id)
        if type(value) is not want:
            raise TypeError(f"{what} of a program object did not give a {want.__name__}")
        return value

    def __len__(self):
        return self._typed("len", int, "len()")

    def __iter__(self):
        return iter(self._typed("list", list, "iterating"))

    def __bool__(self):
        return self._typed("bool", bool, "bool()")

    def __repr__(self):
        text = self._rpc.call("repr", self._id)
        return text if type(text) is str else f"<{self._type} object of the program>"

    __str__ = __repr__


def judge_main(sock_fd):
    sock = socket.socket(fileno=sock_fd)
    _preload()
    if os.geteuid() == 0 and _libc is not None and SANDBOX == "auto":
        try:
            _unshare(CLONE_NEWNET)
        except OSError:
            pass
    # The protocol moves off fds 0 and 1, so that a test program printing cannot write into it.
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0), os.dup2(devnull, 1)
    sys.stdin, sys.stdout = open(0, closefd=False), open(1, "w", closefd=False)
    signal.signal(signal.SIGALRM, _judge_alarm)
    import random
    fresh = {"random": random.getstate(), "recursion": sys.getrecursionlimit()}
    if "numpy" in sys.modules:
        fresh["numpy"] = sys.modules["numpy"].random.get_state()
    _send(out_fd, {"judge": True})
    cache = {}
    while True:
        request = _recv(in_fd)
        if request is None:
            os._exit(0)
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 16, 4)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)                       # the zygote is gone
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            _send(out_fd, {"no_run": True})
            continue
        # every test program starts from the same state of the modules tests use for their inputs
        random.setstate(fresh["random"])
        sys.setrecursionlimit(fresh["recursion"])
        if "numpy" in fresh:
            sys.modules["numpy"].random.set_state(fresh["numpy"])
        _send(out_fd, _judge_one(request, fds, cache))


class _JudgeTimeout(BaseException):
    pass


_ALARM = {"armed": False, "fired": False}


def _judge_alarm(signum, frame):
    # fires again every 50 ms once the limit is past, so a unittest runner that records it as one test's error
    # is interrupted again in the next test
    if _ALARM["armed"]:
        _ALARM["fired"] = True
        raise _JudgeTimeout


def _judge_one(request, fds, cache):
    """Run one test program here, in the judge (which never runs program code), with a time limit of its own:
    the zygote's limit on the program's run comes first, so this one only stops a test program that loops."""
    req_w, ans_r = fds
    key = (request["kind"], request["mode"], request["program"], request["prelude"])
    try:
        if key not in cache:
            if len(cache) > 512:
                cache.clear()
            cache[key] = _judge_prepare(request)
        _ALARM.update(armed=True, fired=False)
        signal.setitimer(signal.ITIMER_REAL, request["timeout"] + 2.0, 0.05)
        try:
            verdict = _judge_run(request, cache[key], _RPC(req_w, ans_r))
        finally:
            _ALARM["armed"] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        if _ALARM["fired"]:
            raise _JudgeTimeout
        return verdict
    except SyntaxError as e:
        return {"verdict": ["harness_error", 0, 1, _one_line(f"test program does not parse: {e}")]}
    except _JudgeTimeout:
        return {"verdict": ["timeout", 0, 1, "the tests ran past the time limit"]}
    except Exception as e:
        return {"verdict": ["harness_error", 0, 1, _one_line(f"judge error: {e!r}")]}
    finally:
        os.close(req_w), os.close(ans_r)


def _judge_prepare(request):
    test_file = f"<tests-{os.urandom(8).hex()}>"
    tree = ast.parse(request["prelude"])
    stubs = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and
             all(isinstance(s, ast.Pass) or isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                 for s in node.body)}
    return {"test_file": test_file, "stubs": stubs, "prelude": compile(tree, "<prelude>", "exec"),
            "code": compile(request["program"], test_file, "exec")}


def _judge_run(request, prepared, rpc):
    """Run one test program against the program behind rpc. Returns {"verdict": [...], "trust"} or one of
    {"program_ended"}, {"cannot_cross"}."""
    import builtins
    if request["mode"] == "inproc":
        try:
            rpc.send(["inproc", request["kind"], request["program"], prepared["test_file"]])
            body = rpc.receive()
        except _ProgramEnded:
            return {"program_ended": True, "trust": "in-process"}
        except _ProgramBroke:
            return {"verdict": ["runtime_error", 0, 1, rpc.garbage], "trust": "in-process"}
        try:
            tag, (status, passed, total, detail) = json.loads(body)
            ok = tag == "done" and status in PROGRAM_STATUSES and type(passed) is int and type(total) is int \
                and 0 <= passed <= total and type(detail) is str
        except Exception:
            ok = False
        if not ok:
            return {"verdict": ["runtime_error", 0, 1, "the in-process tests sent a malformed report"],
                    "trust": "in-process"}
        return {"verdict": [status, passed, total, _one_line(detail)], "trust": "in-process"}
    try:
        rpc.send(["serve"])
        hello = parse_answer(rpc.receive(), rpc.handle)
    except _ProgramEnded:
        return {"program_ended": True}
    except (_ProgramBroke, Garbage) as e:
        return {"verdict": ["runtime_error", 0, 1, rpc.garbage or str(e)]}
    if hello[0] == "S":
        return {"verdict": ["syntax_error", 0, 1, hello[1]]}
    if hello[0] == "X":
        return {"verdict": ["runtime_error", 0, 1, f"the program called exit({hello[1]}) before the tests ran"]}
    if hello[0] == "E":
        return {"verdict": [_error_status(hello[1]), 0, 1, _one_line(f"{hello[1][0]}: {hello[2]}")]}
    if hello[0] != "ok":
        return {"verdict": ["runtime_error", 0, 1, "the program's first answer is not its names"]}
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    exec(prepared["prelude"], namespace)
    entry, stubs, builtin_names = set(request["entry_point"]), prepared["stubs"], set(dir(builtins))
    for name in hello[1]:
        # The judge's builtins and the prelude's helpers are its own; a program's function of the same name is
        # reached only where the test names it as an entry point or the prelude only declares it (a stub).
        if name in entry or not (name in builtin_names or (name in namespace and name not in stubs)):
            namespace[name] = _Remote(rpc, name)
    test_file, program = prepared["test_file"], request["program"]
    if request["kind"] == "unittest":
        result = _run_unittests(prepared["code"], namespace)
    else:
        try:
            exec(prepared["code"], namespace)
            result = ["passed", 1, 1, ""]
        except AssertionError as e:
            result = ["failed", 0, 1, _assert_detail(e, test_file, program)]
        except (_ProgramEnded, _ProgramBroke, _CannotCross, _ProgramExit):
            result = None
        except _JudgeTimeout:
            raise
        except BaseException as e:
            result = [_status_of_error(_describe(e)), 0, 1, _describe(e)]
    if rpc.ended:
        return {"program_ended": True}
    if rpc.crossing:
        return {"cannot_cross": rpc.crossing}
    if rpc.garbage:
        return {"verdict": ["runtime_error", 0, 1, _one_line(rpc.garbage)]}
    if rpc.exit is not None:
        return {"verdict": ["failed", 0, 1, _one_line(f"exit({rpc.exit}) during the tests")]}
    return {"verdict": result}


def _clip(text, n=200):
    text = str(text)
    return text if len(text) <= n else text[:n] + f"...(+{len(text) - n} chars)"


def _status_of_error(text):
    return "memory" if text.startswith("MemoryError") else "runtime_error"



# --------------------------------------------------------------------------------------------------------------
# In-process tests (the path kept for tests whose objects cannot cross as data): parse, restore, guard.

def _prepare_tests(program, test_file, kind, state):
    """Parse, rewrite and compile a test program (in the zygote, once per distinct program: GRPO's G samples of a
    problem share it), and list the modules to restore after the program under test ran: this file, builtins,
    unittest, and whatever the test program imports."""
    tree = ast.parse(program, filename=test_file)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    wanted = {"__main__", "builtins"} | ({"unittest", "unittest.case", "unittest.suite", "unittest.loader",
                                          "unittest.result", "unittest.util"} if kind == "unittest" else set())
    for node in ast.walk(tree):
        imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for dotted in imported:
            parts = dotted.split(".")
            wanted.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    wanted |= names & state["modules"].keys()
    code = compile(ast.fix_missing_locations(_GuardRewriter().visit(tree)), test_file, "exec")
    return {"code": code, "names": names,
            "restore": [state["modules"][name] for name in sorted(wanted) if name in state["modules"]]}


def _test_namespace(namespace, tests, guard, state):
    """The namespace the tests run in: a copy of the program's (its functions cannot reach the copy through
    globals()), real builtins, and, for every module name the tests use, the real, restored module."""
    test_namespace = dict(namespace)
    modules = state["modules"]
    for name in tests["names"]:
        value = namespace.get(name)
        if name in modules and value is not modules[name][0] and name in namespace:
            test_namespace[name] = modules[name][0]     # the program rebound e.g. `math` to a fake
        elif type(value) is types.ModuleType and modules.get(value.__name__, (None,))[0] is value:
            _restore_interpreter([modules[value.__name__]])  # e.g. `np` from the prompt's `import numpy as np`
    test_namespace.update(__builtins__=modules["builtins"][0], __recode_guard__=guard,
                          __recode_guard_iter__=lambda items: map(guard, items))
    return test_namespace


def to_plain(value, depth=0):
    """Convert a result to JSON-plain data, accepting only exact builtin types (and numpy's). A subclass or a custom
    class is refused, so no user-defined __eq__ ever takes part in a comparison."""
    if depth > 100:
        raise ValueError("result nested more than 100 levels deep")
    t = type(value)
    if t is int and value.bit_length() > 10_000:
        return {"int_hex": hex(value)}     # decimal conversion of huge ints is quadratic (and capped by Python)
    if value is None or t in (bool, int, float, str):
        return value
    if t in (list, tuple, deque):
        return [to_plain(v, depth + 1) for v in value]
    if t in (dict, Counter, OrderedDict, defaultdict):
        return {k if type(k) is str else json.dumps(to_plain(k, depth + 1)): to_plain(v, depth + 1)
                for k, v in dict.items(value)}
    if t in (set, frozenset):
        return sorted((to_plain(v, depth + 1) for v in value), key=json.dumps)
    if t is complex:
        return {"complex": [value.real, value.imag]}
    if t is bytes:
        return {"bytes": value.hex()}
    if t.__module__ == "numpy" and hasattr(value, "tolist"):
        return to_plain(value.tolist(), depth + 1)
    raise TypeError(f"result of type {t.__qualname__} is not plain data (use builtin types)")


def _restore_interpreter(saved_modules, _modules=sys.modules, _frames=sys._current_frames, _len=len,
                         _setattr=type.__setattr__, _delattr=type.__delattr__):
    """Put back every attribute the program replaced in the given modules and their classes, and refuse to test
    with the program's threads still running (they could patch things mid-test). Using only what was bound when
    this file was loaded, so that nothing the program patched can skip it."""
    for module, saved, classes in saved_modules:
        namespace = module.__dict__
        namespace.clear()
        namespace.update(saved)
        _modules[saved["__name__"]] = module
        for cls, saved_attrs in classes:
            current = cls.__dict__
            for key in [k for k in current if k not in saved_attrs]:
                _delattr(cls, key)
            for key, value in saved_attrs.items():
                if key not in ("__dict__", "__weakref__") and current.get(key) is not value:
                    _setattr(cls, key, value)
    if _len(_frames()) > 1:     # Python threads only: native helper threads (pandas' jemalloc) are harmless
        return "the program left threads running before the tests"
    return None


class _GuardRewriter(ast.NodeTransformer):
    """Route every value the test program obtains (call results, attributes, subscripts, loop items) through the
    guard, which refuses objects whose class defines its own comparisons or arithmetic."""

    @staticmethod
    def _wrap(node, name="__recode_guard__"):
        return ast.copy_location(ast.Call(func=ast.Name(name, ast.Load()), args=[node], keywords=[]), node)

    def visit_Call(self, node):
        self.generic_visit(node)
        return self._wrap(node)

    def visit_Attribute(self, node):
        self.generic_visit(node)
        return self._wrap(node) if isinstance(node.ctx, ast.Load) else node

    visit_Subscript = visit_Attribute

    def visit_For(self, node):
        self.generic_visit(node)
        node.iter = self._wrap(node.iter, "__recode_guard_iter__")
        return node

    visit_comprehension = visit_For


_PLAIN_CONSTANTS = frozenset({int, float, complex, str, bytes, bool, type(None), tuple, frozenset})
_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None), type, range, slice, types.FunctionType,
                      types.BuiltinFunctionType, types.MethodType, types.MethodWrapperType, types.MethodDescriptorType,
                      types.WrapperDescriptorType, types.ModuleType, types.CodeType, types.GeneratorType})
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})


def _make_guard(state, test_file):
    """Build the guard for one run. A class is trusted if it existed before the program ran, if none of the classes
    it is made of defines a dunder beyond HARMLESS_DUNDERS, or if all those dunders are plain functions from
    installed library files (pandas, say) or from the test program itself."""
    known, library_dirs, verdicts = state["classes"], state["library_dirs"], {}

    def trusted_function(value):
        if type(value) in _PLAIN_CONSTANTS:     # e.g. __hash__ = None, __array_priority__ = 1000
            return True
        for unwrap in ("__func__", "fget", "func"):   # classmethod/staticmethod, property, partial(method)
            value = getattr(value, unwrap, None) or value
        code = getattr(value, "__code__", None)
        if type(code) is types.CodeType:
            filename = code.co_filename
            return filename == test_file or (filename.startswith(library_dirs) and os.path.isfile(filename))
        # Not Python code: trusted only as an instance of a library class that existed before the program ran
        # (unittest.mock's MagicProxy); a builtin slot borrowed from another type (__eq__ = int.__ne__) is not.
        return type(value) in known and bool(type(value).__flags__ & (1 << 9))

    def trusted_class(cls):
        verdict = verdicts.get(cls)
        if verdict is None:
            verdict = True
            for klass in cls.__mro__:
                if klass in known or not klass.__flags__ & (1 << 9):   # Py_TPFLAGS_HEAPTYPE: made by Python code
                    continue
                for name, value in vars(klass).items():
                    if name[:2] == "__" == name[-2:] and name not in HARMLESS_DUNDERS and not trusted_function(value):
                        verdict = False
            verdicts[cls] = verdict
        return verdict

    def guard(value):
        t = type(value)
        if t in _SCALARS:
            return value
        stack, seen = [value], set()
        while stack:
            item = stack.pop()
            t = type(item)
            if t in _SCALARS or id(item) in seen:
                continue
            seen.add(id(item))
            if t in _CONTAINERS:
                members = [*item.keys(), *item.values()] if t is dict else item
                for member_type in set(map(type, members)):
                    if member_type not in _SCALARS:
                        stack.extend(m for m in members if type(m) is member_type)
            elif t in known and t.__module__ == "numpy":
                if getattr(getattr(item, "dtype", None), "hasobject", False):
                    stack.extend(item.flat)
            elif not trusted_class(t):
                raise AssertionError(f"the program returned a {t.__qualname__}, a class that defines its own "
                                     f"comparison or arithmetic; such objects cannot pass tests")
        return value

    return guard


def _run_unittests(test_code, namespace):
    import unittest
    try:
        exec(test_code, namespace)
    except BaseException as e:
        return ["runtime_error", 0, 1, _describe(e)]
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)
               and v is not unittest.TestCase]
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in classes)
    result = unittest.TestResult()
    suite.run(result)
    total = result.testsRun
    if total == 0:
        return ["failed", 0, 0, "no test ran"]
    bad = len(result.failures) + len(result.errors)
    if not bad:
        return ["passed", total, total, ""]
    test, trace = (result.failures or result.errors)[0]
    last_line = trace.strip().splitlines()[-1]
    status = "failed" if result.failures else _status_of_error(last_line)
    return [status, total - bad, total, _one_line(f"{test.id().split('.')[-1]}: {last_line}")]


def _describe(exc):
    return _one_line(f"{type(exc).__name__}: {exc}")


def _assert_detail(exc, test_file, program):
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == test_file:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = ""
    if line is not None:
        lines = program.splitlines()
        where = f"line {line}: {lines[line - 1].strip()}" if 0 < line <= len(lines) else f"line {line}"
    message = str(exc)
    return _one_line(f"AssertionError at {where}" + (f" ({message})" if message else ""))


def _one_line(text, n=300):
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


# --------------------------------------------------------------------------------------------------------------
# Command line

def read_jobs(path):
    """Parse a JSONL file; a malformed line becomes an invalid job whose result names the line."""
    jobs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                job = json.loads(line)
            except json.JSONDecodeError as e:
                job = {"id": None, "_invalid": f"{path}:{lineno}: not valid JSON ({e.msg})"}
            else:
                problem = validate_job(job)
                if problem:
                    job = {"id": job.get("id") if isinstance(job, dict) else None,
                           "_invalid": f"{path}:{lineno}: {problem}"}
            jobs.append(job)
    return jobs


def main():
    parser = argparse.ArgumentParser(description="Run untrusted code against tests in a sandbox.")
    parser.add_argument("jobs", help="JSONL file, one job per line")
    parser.add_argument("--out", required=True, help="JSONL file to write, one result per job, same order")
    parser.add_argument("--workers", type=int, default=default_workers(), help="parallel sandboxes (default: cores)")
    parser.add_argument("--timeout", type=float, default=3.0, help="wall seconds per test case")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory a program may allocate")
    parser.add_argument("--fail-fast", action="store_true", help="stop a job at its first failing case")
    args = parser.parse_args()
    print(f"execute.py config: {vars(args)}", file=sys.stderr)
    jobs = read_jobs(args.jobs)
    valid = [j for j in jobs if "_invalid" not in j]
    for j in jobs:
        if "_invalid" in j:
            print(f"error: {j['_invalid']}", file=sys.stderr)
    print(f"isolation: {isolation(args.workers)}", file=sys.stderr)
    results = iter(run_jobs(valid, workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb,
                            fail_fast=args.fail_fast, progress=True))
    counts = {}
    with open(args.out, "w", encoding="utf-8") as out:
        for job in jobs:
            if "_invalid" in job:
                result = {"id": job["id"], "status": "harness_error", "passed": 0, "total": 0,
                          "detail": f"invalid job: {job['_invalid']}", "trust": "data"}
            else:
                result = next(results)
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            out.write(json.dumps(result) + "\n")
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())), file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--zygote":
        zygote_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--judge":
        judge_main(int(sys.argv[2]))
    else:
        main()
