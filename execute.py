"""
execute.py: run untrusted, model-written Python against tests and return a verdict you can train on.

Every reward in grpo.py and every pass@k in evaluate.py is a verdict from this file. A job is a program plus a
test specification of one of four kinds:

    {"type": "assert",   "program": "..."}      test code run after the program (HumanEval check(), MBPP asserts)
    {"type": "stdio",    "cases": [{"input": "...", "output": "..."}], "atol": 0}    real stdin through a pipe
    {"type": "call",     "fn_name": "f", "cases": [{"args": [...], "expected": ...}], "atol": 0}
    {"type": "unittest", "program": "..."}      unittest.TestCase classes (BigCodeBench)

Command line (one job per JSONL line, one result per line, same order):

    python execute.py jobs.jsonl --out results.jsonl [--workers N] [--timeout S] [--memory-mb M] [--fail-fast]

Python API (what grpo.py and evaluate.py call):

    from execute import run_jobs
    results = run_jobs([{"id": 0, "code": "def f(x): return x", "tests": {...}}], timeout=3.0, fail_fast=True)

How it is safe (README "execute.py" lists each threat and what stops it):
- Jobs run in small "zygote" interpreters spawned clean (never forked from a process holding torch or CUDA); each
  zygote forks one sandboxed child per run. With root and namespaces the child is PID 1 of a fresh PID namespace
  (killing it kills everything it started), has its own mount namespace (tmpfs cwd, shared temp dirs read-only,
  private /proc) and an empty network namespace, and runs as an unprivileged uid of its own, so RLIMIT_NPROC binds
  even though we are root. Without those privileges it falls back to a subreaper sweep, and says so.
- The parent owns time (wall-clock deadline, then SIGKILL); rlimits cap memory, file size and open files; the
  environment is built from scratch; output is capped.
- The exit code proves nothing: the child reports over a private pipe, each line tagged with a per-run nonce.
  call/stdio outputs are compared in the parent as plain data. assert/unittest compare in the child, so their test
  code is rewritten to refuse values whose class defines its own comparison (the AlwaysEqual hack), and what the
  program patched (modules, unittest's assertion methods) is restored before the tests run.
"""
import argparse
import ast
import ctypes
import gc
import json
import math
import os
import resource
import select
import signal
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
TEST_TYPES = ("assert", "stdio", "call", "unittest")

# Limits beyond the three on the command line. Sized for benchmark code; raise them for heavier suites.
STDOUT_LIMIT = 16 << 20      # bytes of stdout kept per run; a stdio program printing more is stopped
STDERR_KEEP = 4096           # tail of stderr kept for the failure detail
FILE_SIZE_LIMIT = 64 << 20   # RLIMIT_FSIZE: largest file a program may write
SCRATCH_MB = 128             # size of the tmpfs a program gets as cwd (namespaced mode)
OPEN_FILES = 256             # RLIMIT_NOFILE
PROCESSES = 128              # RLIMIT_NPROC for the program's own uid (threads count too)
UID_BASE = 1_000_000_000     # program uids: UID_BASE + 1024 * (runner pid % 10**6) + slot, unique per runner and slot
REPORT_FD = 3                # the child's private report pipe
DIGEST_ABOVE = 8 << 20       # a call result whose JSON is longer is shipped as a sha256 digest
# "auto": the strongest isolation the machine allows. "minimal": no namespaces and no uid switch, as on a machine
# without privileges (used by the tests to exercise the fallback; never choose it for real training).
SANDBOX = os.environ.get("RECODE_SANDBOX", "auto")

# --------------------------------------------------------------------------------------------------------------
# Linux plumbing: the few syscalls the standard library of Python 3.11 does not wrap.

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
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


# --------------------------------------------------------------------------------------------------------------
# Parent side: validate jobs, keep a pool of zygotes, hand out jobs, compare outputs as plain data.

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
    if kind in ("assert", "unittest") and not isinstance(tests.get("program"), str):
        return f"{kind} tests need a 'program' string"
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
    data = json.dumps(obj).encode()
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd, deadline=None):
    """Read one length-prefixed JSON message; None at EOF; TimeoutError past the deadline."""
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


class Zygote:
    """A clean interpreter that forks the sandboxed runs of one job at a time (see zygote_main)."""

    def __init__(self, slot):
        uid = UID_BASE + 1024 * (os.getpid() % 1_000_000) + slot
        if SANDBOX not in ("auto", "minimal"):
            raise ValueError(f"RECODE_SANDBOX must be 'auto' or 'minimal', not {SANDBOX!r}")
        # -s -P rather than -I: the environment is already built from scratch, and -I would drop PYTHONHASHSEED=0,
        # which keeps set and dict-of-str iteration order, and so verdicts, reproducible from run to run.
        self.proc = subprocess.Popen([sys.executable, "-s", "-P", os.path.abspath(__file__), "--zygote", str(uid),
                                      SANDBOX],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_clean_env(),
                                     cwd="/", start_new_session=True)
        self.to_zygote, self.from_zygote = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        hello = _recv(self.from_zygote, time.monotonic() + 60)
        if not hello or "isolation" not in hello:
            raise RuntimeError(f"execute.py could not start its sandbox process {slot}")
        self.isolation = hello["isolation"]

    def run(self, job, timeout, memory_mb, fail_fast):
        """Run one job. The zygote gets the program and the test inputs only: expected outputs stay in this
        process, which judges each case as it is reported and tells the zygote whether to go on."""
        tests = job["tests"]
        cases = tests.get("cases", [])
        inputs = [{k: c[k] for k in ("input", "args", "args_py", "timeout") if k in c} for c in cases]
        _send(self.to_zygote, {"code": job["code"], "tests": dict(tests, cases=inputs), "timeout": timeout,
                               "memory_mb": memory_mb})
        budget = time.monotonic() + sum(c.get("timeout", timeout) for c in cases) + timeout + 2 * len(cases) + 30
        passed, first_failure, outputs, times = 0, None, [None] * len(cases), [None] * len(cases)
        while True:
            message = _recv(self.from_zygote, budget)
            if message is None:
                raise EOFError("the sandbox process exited")
            if "end" not in message:          # one case's outcome
                times[message["index"]] = message.get("seconds")
                failure = _judge_case(tests, message, outputs)
                if failure is None:
                    passed += 1
                elif first_failure is None:
                    first_failure = failure
                _send(self.to_zygote, {"go_on": failure is None or not fail_fast})
                continue
            end = message["end"]
            if end.get("done"):                 # assert / unittest report their own tally
                status, passed, total, detail = end["done"]
                return {"status": status, "passed": passed, "total": total, "detail": detail}
            if first_failure is None and end.get("error"):
                first_failure = end["error"]
            outcome = first_failure or {"status": "passed", "detail": ""}
            result = {"status": outcome["status"], "passed": passed, "total": len(cases) or 1,
                      "detail": outcome["detail"]}
            if any("expected" not in c for c in cases) and tests["type"] == "call":
                result["outputs"], result["times"] = outputs, times   # record mode: outputs and seconds per case
            return result

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _judge_case(tests, message, outputs):
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
    if plain_equal(message["value"], case["expected"], atol):
        return None
    return {"status": "failed", "detail": f"case {index}: expected {_clip(json.dumps(case['expected']))}, "
                                          f"got {_clip(json.dumps(message['value']))}"}


class Pool:
    """K zygotes; worker thread k owns zygote k."""

    def __init__(self, workers):
        self.zygotes = [Zygote(i) for i in range(workers)]
        self.isolation = self.zygotes[0].isolation

    def run_one(self, slot, job, timeout, memory_mb, fail_fast):
        try:
            return self.zygotes[slot].run(job, timeout, memory_mb, fail_fast)
        except (TimeoutError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
            # The zygote is trusted code, so this is our fault, never the model's: report it and start a new one.
            self.zygotes[slot].close()
            self.zygotes[slot] = Zygote(slot)
            return {"status": "harness_error", "passed": 0, "total": 0, "detail": f"runner failure: {e!r}"}

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
    """Start (or resize) the zygote pool. Call it before importing torch to keep the pool's start cheap and clean."""
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
    with _run_lock:     # worker thread k owns zygote k for the whole batch: one batch at a time
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
                    result = {"status": "harness_error", "passed": 0, "total": 0, "detail": f"invalid job: {problem}"}
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
# Zygote side: a clean interpreter (spawned with a scrubbed environment) that forks one child per run.

# Imported once here so every forked run finds them loaded (fast) and so the harness can tell classes that existed
# before the program ran from classes the program made. Missing optional modules are simply skipped.
PRELOAD = ("math cmath decimal fractions statistics random itertools functools operator collections heapq bisect "
           "re string json copy typing dataclasses datetime enum numbers array struct hashlib io textwrap unittest "
           "unittest.mock contextlib abc types queue threading numpy").split()

HARMLESS_DUNDERS = frozenset(
    "__init__ __new__ __repr__ __str__ __format__ __doc__ __module__ __qualname__ __dict__ __weakref__ __slots__ "
    "__annotations__ __match_args__ __init_subclass__ __class_getitem__ __getnewargs__ __getnewargs_ex__ "
    "__reduce__ __reduce_ex__ __getstate__ __setstate__ __copy__ __deepcopy__ __del__ __set_name__ __orig_bases__ "
    "__parameters__ __dataclass_fields__ __dataclass_params__ __firstlineno__ __static_attributes__ "
    "__abstractmethods__ __enter__ __exit__ __hash__".split())


def zygote_main(uid, sandbox):
    # No PR_SET_PDEATHSIG here: it fires when the parent *thread* that spawned us exits, and pools are (re)started
    # from worker threads. EOF on stdin, which comes when the runner exits or dies, ends us instead.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)          # orphans of a run come back to us, so none escapes the sweep
    mode = _setup_zygote_isolation(uid, sandbox)
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:
            pass
    state = {"mode": mode, "modules": _snapshot_modules(), "classes": _all_classes(),
             "library_dirs": _library_dirs(), "scratch": mode["scratch"], "prepared_tests": {},
             "pidns": os.open("/proc/self/ns/pid", os.O_RDONLY) if mode["pid_ns"] else None,
             "test_file": f"<tests-{os.urandom(8).hex()}>",   # how the guard tells test code from program code
             "base_vm": _vm_size()}
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()

    def ask_parent(message):
        _send(out_fd, message)
        answer = _recv(in_fd)
        if answer is None:
            os._exit(0)
        return answer["go_on"]

    _send(out_fd, {"isolation": mode["description"]})
    while True:
        request = _recv(in_fd)
        if request is None:
            if not mode["mount_ns"]:    # else it is a mount point of our namespace, gone with us
                os.rmdir(state["scratch"])
            os._exit(0)
        try:
            end = run_job_in_zygote(request, state, ask_parent)
        except Exception as e:  # a bug of ours: never a verdict on the model
            import traceback
            end = {"error": {"status": "harness_error",
                             "detail": f"runner error: {e!r} {traceback.format_exc(limit=3)[-400:]}"}}
        _send(out_fd, {"end": end})


def _setup_zygote_isolation(uid, sandbox):
    """Decide, by trying, which isolation this machine allows, and set up what is shared by all runs of this zygote:
    the network namespace and the mount namespace. The description is what users see."""
    scratch = tempfile.mkdtemp(prefix="recode-exec-")
    os.chmod(scratch, 0o755)
    tempfile.tempdir = None     # do not let the snapshot of tempfile remember /tmp: runs must use their TMPDIR
    mode = {"pid_ns": False, "mount_ns": False, "net_ns": False, "uid": None, "hidepid": False, "scratch": scratch}
    if os.geteuid() == 0 and _libc is not None and sandbox == "auto":
        try:
            _unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
            mode["net_ns"] = True
        except OSError:
            pass
        mode["pid_ns"] = _probe_pid_namespace()
        try:
            _unshare(CLONE_NEWNS)
            mode["mount_ns"] = True
        except OSError:
            pass
        hidden = _unreachable_library_dirs()
        # Another uid must be able to import the rest of the standard library and site-packages. With a mount
        # namespace we re-expose them (see _private_mounts); without one, a uid switch would break lazy imports.
        if mode["mount_ns"] or not hidden:
            mode["uid"] = uid
        if mode["mount_ns"]:
            mode["hidepid"] = _private_mounts(scratch, hidden, uid)
    parts = ["a PID namespace per run (killing its PID 1 kills everything it started)" if mode["pid_ns"] else
             "no PID namespace: subreaper sweep of the run's processes"]
    if mode["mount_ns"]:
        parts.append("a private mount namespace (tmpfs cwd, shared temp dirs read-only, closed dirs hidden"
                     + (", /proc shows a run only its own processes)" if mode["hidepid"] else ")"))
    parts.append("empty network namespace" if mode["net_ns"] else "NETWORK NOT ISOLATED")
    parts.append(f"unprivileged uid per worker (RLIMIT_NPROC={PROCESSES} binds)" if mode["uid"] is not None
                 else "same uid as the caller: process cap not enforceable, programs can signal your processes")
    mode["description"] = "; ".join(parts) + "; rlimits AS/FSIZE/NOFILE/CORE; wall-clock SIGKILL"
    return mode


def _private_mounts(scratch, hidden, uid):
    """Inside the zygote's own mount namespace (so once, not per run): a size-capped tmpfs as the runs' cwd, the
    shared temp dirs read-only, closed directories such as /root replaced by an empty tmpfs with only the Python
    install bound back, and a /proc on which a run's uid sees only its own processes."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={SCRATCH_MB}m,mode=0700,uid={uid},gid={uid}")
    staged = []
    for i, (ancestor, dirs) in enumerate(hidden):
        for j, path in enumerate(dirs):
            stage = os.path.join(scratch, f".stage{i}.{j}")
            os.mkdir(stage)
            _mount(path, stage, None, MS_BIND | MS_REC)
            staged.append((stage, path))
        _mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for stage, path in staged:
        os.makedirs(path, exist_ok=True)
        _mount(stage, path, None, MS_MOVE)
        os.rmdir(stage)
    for shared in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(shared):
            _mount(shared, shared, None, MS_BIND | MS_REC)
            _mount(None, shared, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        return True
    except OSError:
        return False


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


def run_job_in_zygote(request, state, ask_parent):
    """Run one job's sandboxed runs; report each case through ask_parent(message) -> go on?; return the end."""
    code, tests = request["code"], request["tests"]
    limits = {"timeout": request["timeout"], "memory_mb": request["memory_mb"],
              "case_timeouts": [c.get("timeout", request["timeout"]) for c in tests.get("cases", [])]}
    kind = tests["type"]
    if kind == "stdio":     # one fresh run per case, real stdin through a pipe
        for index, case in enumerate(tests["cases"]):
            case_limits = dict(limits, case_timeouts=[limits["case_timeouts"][index]])
            run = sandbox_run({"kind": "stdio", "code": code}, case["input"].encode(), case_limits, state)
            error = run["error"]
            ended_badly = "error" in run["reports"] or ("exit" not in run["reports"] and run["exit_code"] != 0)
            if error is None and ended_badly:
                error = _failure_without_report(run)
            if error and error["status"] == "syntax_error":
                return {"error": error}
            if not ask_parent({"index": index, "error": error, "stdout": run["stdout"]}):
                break
        return {}
    if kind == "call":      # one run for all cases; the parent judges each as it arrives
        payload = {"kind": "call", "code": code, "fn_name": tests["fn_name"], "cases": tests["cases"]}
        run = sandbox_run(payload, b"", limits, state, on_case=ask_parent)
        if run["error"]:
            return {"error": run["error"]}
        if run["reports"]["cases_done"] < len(tests["cases"]) and not run["stopped_early"]:
            return {"error": _failure_without_report(run)}
        return {}
    cache = state["prepared_tests"]
    if (kind, tests["program"]) not in cache:
        if len(cache) > 512:
            cache.clear()
        try:
            cache[kind, tests["program"]] = _prepare_tests(tests["program"], state["test_file"], kind, state)
        except SyntaxError as e:
            return {"error": {"status": "harness_error", "detail": _one_line(f"test program does not parse: {e}")}}
    payload = {"kind": kind, "code": code, "program": tests["program"], "prepared": cache[kind, tests["program"]]}
    run = sandbox_run(payload, b"", limits, state)
    if run["error"]:
        return {"error": run["error"]}
    if "done" not in run["reports"]:
        return {"error": _failure_without_report(run)}
    return {"done": run["reports"]["done"]}


def _clip(text, n=200):
    text = str(text)
    return text if len(text) <= n else text[:n] + f"...(+{len(text) - n} chars)"


def _failure_without_report(run):
    """The child ended without reporting: explain how, from what it did report, its wait status and stderr."""
    reports, code = run["reports"], run["exit_code"]
    if reports.get("syntax"):
        return {"status": "syntax_error", "detail": reports["syntax"]}
    if reports.get("error"):
        return {"status": _status_of_error(reports["error"]), "detail": reports["error"]}
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if -code == signal.SIGKILL:
            return {"status": "memory", "detail": f"killed by {name} (likely out of memory)"}
        return {"status": "runtime_error", "detail": f"killed by {name}"}
    tail = run["stderr"].strip().splitlines()[-1:]
    return {"status": "failed", "detail": _clip(f"exited with code {code} before the tests reported"
                                                + (f": {tail[0]}" if tail else ""))}


def _status_of_error(text):
    return "memory" if text.startswith("MemoryError") else "runtime_error"


def sandbox_run(payload, stdin_data, limits, state, on_case=None):
    """Fork one sandboxed child, feed it, watch it, kill it; return what it reported and how it ended."""
    nonce = os.urandom(16).hex()
    pipes = [os.pipe() for _ in range(4)]   # stdin, stdout, stderr, report
    (in_r, in_w), (out_r, out_w), (err_r, err_w), (rep_r, rep_w) = pipes
    mode = state["mode"]
    if mode["pid_ns"]:
        _unshare(CLONE_NEWPID)              # our next child becomes PID 1 of a new namespace
    gc.freeze()   # the child's garbage collections then skip our objects instead of copying every page they touch
    pid = os.fork()
    if pid == 0:
        os.close(in_w), os.close(out_r), os.close(err_r), os.close(rep_r)
        _child(payload, (in_r, out_w, err_w, rep_w), nonce, limits, state)
        os._exit(71)   # not reached: _child always exits
    if mode["pid_ns"]:
        _check(_libc.setns(state["pidns"], CLONE_NEWPID), "setns")  # later forks of ours stay in our namespace
    for fd in (in_r, out_w, err_w, rep_w):
        os.close(fd)

    timeouts = limits["case_timeouts"] or [limits["timeout"]]
    case_timeout = lambda: timeouts[min(reports["cases_done"], len(timeouts) - 1)]
    deadline = time.monotonic() + timeouts[0] + 1.0   # +1 s: interpreter start-up work is not the program's time
    streams = {out_r: bytearray(), err_r: bytearray(), rep_r: bytearray()}
    reports, stopped_early, timed_out, overflow = {"cases_done": 0}, False, False, False
    pending_in = memoryview(stdin_data)
    if pending_in:
        os.set_blocking(in_w, False)
    else:
        os.close(in_w)
        in_w = None
    open_fds = set(streams)
    pidfd = os.pidfd_open(pid)
    while True:
        wait = deadline - time.monotonic()
        if wait <= 0:
            timed_out = True
            break
        writers = [in_w] if in_w is not None else []
        readable, writable, _ = select.select(list(open_fds) + [pidfd], writers, [], wait)
        if writable:
            try:
                pending_in = pending_in[os.write(in_w, pending_in[:1 << 16]):]
            except BrokenPipeError:
                pending_in = memoryview(b"")
            if not pending_in:
                os.close(in_w)
                in_w = None
        for fd in readable:
            if fd == pidfd:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.discard(fd)
                continue
            buf = streams[fd]
            if fd == err_r:
                buf.extend(chunk)
                del buf[:-STDERR_KEEP]
            elif fd == out_r:
                if len(buf) < STDOUT_LIMIT:
                    buf.extend(chunk[:STDOUT_LIMIT - len(buf)])
                elif payload["kind"] == "stdio":
                    overflow = True
            else:
                buf.extend(chunk)
                keep_going, reset = _parse_reports(buf, nonce, reports, on_case)
                if reset:   # the parent owns time per case: each finished case opens a fresh window
                    deadline = time.monotonic() + case_timeout()
                if not keep_going:
                    stopped_early = True
        # Once the child has exited, everything it wrote is in the pipes: stop waiting, even if a leftover
        # process of its own still holds a pipe open (the fallback mode's sweep kills it next).
        if overflow or stopped_early or pidfd in readable:
            break
    exit_code = _kill_run(pid, state)
    os.close(pidfd)
    for fd in list(open_fds):   # drain what was written before the kill
        try:
            os.set_blocking(fd, False)
            while chunk := os.read(fd, 1 << 16):
                if fd == rep_r:
                    streams[fd].extend(chunk)
                elif fd == out_r and len(streams[fd]) < STDOUT_LIMIT:
                    streams[fd].extend(chunk[:STDOUT_LIMIT - len(streams[fd])])
        except (BlockingIOError, OSError):
            pass
        if fd == rep_r and not stopped_early:
            _parse_reports(streams[fd], nonce, reports, on_case)
    for fd in (out_r, err_r, rep_r) + ((in_w,) if in_w is not None else ()):
        os.close(fd)
    _sweep_files(state)
    error = None
    if not reports.get("ready"):
        why = streams[err_r].decode(errors="replace").strip()[-300:]
        error = ({"status": "timeout", "detail": "timed out before starting"} if timed_out else
                 {"status": "harness_error", "detail": f"sandbox setup failed: {why or exit_code}"})
    elif timed_out:
        where = f" (case {reports['cases_done']})" if payload["kind"] == "call" else ""
        error = {"status": "timeout", "detail": f"exceeded the {case_timeout():g} s limit{where}"}
    elif overflow:
        error = {"status": "runtime_error", "detail": f"printed more than {STDOUT_LIMIT} bytes"}
    elif reports.get("syntax"):
        error = {"status": "syntax_error", "detail": reports["syntax"]}
    return {"error": error, "reports": reports, "exit_code": exit_code, "stopped_early": stopped_early,
            "stdout": streams[out_r].decode(errors="replace"), "stderr": streams[err_r].decode(errors="replace")}


def _parse_reports(buf, nonce, reports, on_case):
    """Consume complete report lines from buf. Lines without our nonce are forgeries and are ignored."""
    keep_going, reset = True, False
    while (end := buf.find(b"\n")) >= 0:
        line = bytes(buf[:end]).decode(errors="replace")
        del buf[:end + 1]
        tag, _, rest = line.partition(" ")
        if tag != nonce:
            reports["forged"] = reports.get("forged", 0) + 1
            continue
        kind, _, body = rest.partition(" ")
        if kind == "case":
            index, ok, value, seconds = json.loads(body)
            reports["cases_done"] += 1
            reset = True
            error = None if ok else {"status": _status_of_error(value), "detail": value}
            message = {"index": index, "error": error, "value": value if ok else None, "seconds": seconds}
            if on_case is not None and not on_case(message):
                keep_going = False
                break
        elif kind == "done":
            reports["done"] = json.loads(body)
        else:
            reports[kind] = body or True
    return keep_going, reset


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


def _sweep_files(state):
    """Empty the scratch dir for the next run, and without a mount namespace, remove what the run wrote to the
    shared temp dirs."""
    import shutil
    for entry in os.scandir(state["scratch"]):
        shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
    if state["mode"]["mount_ns"] or state["mode"]["uid"] is None:
        return
    for shared in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            for entry in os.scandir(shared):
                if entry.stat(follow_symlinks=False).st_uid == state["mode"]["uid"]:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------------------
# Child side: lock the process down, then run the program and its tests. Everything below runs in the sandbox.

def _child(payload, fds, nonce, limits, state):
    in_r, out_w, err_w, rep_w = fds
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.dup2(in_r, 0), os.dup2(out_w, 1), os.dup2(err_w, 2), os.dup2(rep_w, REPORT_FD)
        os.closerange(REPORT_FD + 1, 65536)
        os.setsid()   # a session of its own: its own CPU autogroup, so a busy or forking run cannot starve others
        scratch = state["scratch"]
        mode = state["mode"]
        if mode["uid"] is not None and not mode["mount_ns"]:
            os.chown(scratch, mode["uid"], mode["uid"])
        os.chdir(scratch)
        os.environ["HOME"] = os.environ["TMPDIR"] = scratch    # the rest is the zygote's environment: _clean_env()
        budget = sum(limits["case_timeouts"]) or limits["timeout"]
        _limit(resource.RLIMIT_CPU, int(budget) + 2)     # backstop only: the parent's wall clock rules
        _limit(resource.RLIMIT_AS, state["base_vm"] + limits["memory_mb"] * (1 << 20))
        _limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
        _limit(resource.RLIMIT_NOFILE, OPEN_FILES)
        _limit(resource.RLIMIT_CORE, 0)
        if mode["uid"] is not None:
            _limit(resource.RLIMIT_NPROC, PROCESSES)
            os.setgroups([])
            os.setgid(mode["uid"])
            os.setuid(mode["uid"])
        # Fresh text streams on the new fds; the zygote's own streams pointed at its protocol pipes.
        sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    except BaseException as e:
        os.write(2, f"sandbox setup: {e!r}\n".encode())
        os._exit(70)
    try:
        _harness(payload, nonce, state)
    finally:   # whatever the program raised or broke, this process never returns into the zygote's code
        os._exit(0)


def _limit(which, value):
    soft, hard = resource.getrlimit(which)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, hard))


def _harness(payload, nonce, state):
    """Run the program, then its tests, and report over REPORT_FD. What the report and the tests need is prepared,
    or bound to locals, before the program runs, so that what the program patches changes nothing here."""
    write, dumps, run, tag, flush_out = os.write, json.dumps, exec, nonce, sys.stdout.flush
    untrace = (sys.settrace, sys.setprofile, threading.settrace, threading.setprofile)
    restore = _restore_interpreter
    del nonce

    def report(kind, body=""):
        try:
            write(REPORT_FD, f"{tag} {kind} {body}\n".encode())
        except OSError:
            pass

    import builtins
    report("ready")
    kind, code = payload["kind"], payload["code"]
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError) as e:
        report("syntax", _one_line(f"{type(e).__name__}: {e}"))
        return
    if kind in ("assert", "unittest"):
        tests, test_file = payload["prepared"], state["test_file"]
        guard = _make_guard(state, test_file)

    try:
        run(compiled, namespace)
    except SystemExit as e:
        if kind != "stdio":
            report("error", _one_line(f"the program called exit({e.code!r}) before the tests ran"))
            return
        if e.code not in (None, 0):     # a stdio program may end with sys.exit(0): that is a normal end
            report("error", _one_line(f"SystemExit({e.code!r})"))
            return
    except BaseException as e:
        report("error", _describe(e))
        return
    if kind == "stdio":
        try:
            flush_out()
        except Exception:
            pass
        report("exit")
        return
    if kind == "call":
        _run_call_cases(payload, namespace, report, dumps)
        return

    # assert / unittest: undo what the program did to the interpreter, then run the prepared tests
    for stop_tracing in untrace:
        stop_tracing(None)
    problem = restore(tests["restore"])
    if problem:
        report("error", problem)
        return
    test_namespace = _test_namespace(namespace, tests, guard, state)
    if kind == "unittest":
        report("done", dumps(_run_unittests(tests["code"], test_namespace)))
        return
    try:
        run(tests["code"], test_namespace)
        result = ["passed", 1, 1, ""]
    except AssertionError as e:
        result = ["failed", 0, 1, _assert_detail(e, test_file, payload["program"])]
    except SystemExit as e:
        result = ["failed", 0, 1, _one_line(f"exit({e.code!r}) during the tests")]
    except BaseException as e:
        result = [_status_of_error(_describe(e)), 0, 1, _describe(e)]
    report("done", dumps(result))


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


def _run_call_cases(payload, namespace, report, dumps):
    fn_name = payload["fn_name"]
    try:
        if isinstance(namespace.get("Solution"), type):    # LeetCode style, as LiveCodeBench does
            fn = getattr(namespace["Solution"](), fn_name)
        else:
            fn = namespace[fn_name]
    except BaseException as e:
        report("error", _one_line(f"cannot find {fn_name!r}: {_describe(e)}"))
        return
    clock = time.perf_counter
    for index, case in enumerate(payload["cases"]):
        try:
            args = case["args"] if "args" in case else ast.literal_eval(case["args_py"])
            start = clock()
            value = fn(*args)
            seconds = clock() - start
            line = dumps([index, True, _plain_json(value, dumps), seconds])
        except SystemExit as e:
            line = dumps([index, False, f"exit({e.code!r}) during the call", 0.0])
        except BaseException as e:
            line = dumps([index, False, _describe(e), 0.0])
        report("case", line)


def _plain_json(value, dumps):
    """The result as plain data for the parent. json's C encoder reads builtin containers' own storage, so it is both
    fast and blind to overridden methods; what it refuses goes through to_plain. An output too big to ship (say
    10**8 tuples) is replaced by a digest of its canonical form, which the parent compares exactly."""
    try:
        text = dumps(value)
        plain = value
    except (TypeError, ValueError):
        plain = to_plain(value)
        text = dumps(plain)
    if len(text) <= DIGEST_ABOVE:
        return json.loads(text)
    import hashlib
    canonical = dumps(to_plain(plain), sort_keys=True).encode()
    return {"sha256": hashlib.sha256(canonical).hexdigest(), "json_bytes": len(canonical)}


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
                          "detail": f"invalid job: {job['_invalid']}"}
            else:
                result = next(results)
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            out.write(json.dumps(result) + "\n")
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())), file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--zygote":
        zygote_main(int(sys.argv[2]), sys.argv[3])
    else:
        main()
