"""Adversarial tests for execute.py, by attack class (issue 13), with controls so that a sandbox refusing
everything fails too:

    python -m pytest -q tests/test_execute_attacks.py

Rules every attack is held to: its status is never "passed" and never "harness_error" (whatever a program can do is
the program's failure: failed, runtime_error, timeout, memory or syntax_error). A unittest job may pass only if its
result says "trust": "in-process". Each attack is written so that, if the trick works, a wrong program gets a
passing verdict (or leaves a trace the test looks for), so a working trick shows up as a failing test.

All jobs run in a few execute.run_jobs calls inside one throwaway PID namespace (`unshare --pid --fork`), so a
program escaping the sandbox kills only that namespace. The files and sockets the host-isolation attacks look for
are made by this process before the run and removed after it.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS_FILE = os.path.abspath(__file__)
sys.path.insert(0, ROOT)
import execute  # noqa: E402
from test_execute import in_throwaway_pid_namespace  # noqa: E402

PROGRAM_FAILURES = ("failed", "runtime_error", "timeout", "memory", "syntax_error")
TIMEOUT, MEMORY_MB = 10.0, 512    # generous: on a loaded machine a slow attack must not pass as blocked

# Names of the host objects the isolation attacks look for: fresh per session, so a leftover of an earlier session
# is never mistaken for a leak of this one.
TAG = secrets.token_hex(6)
SECRET_DIR = f"/tmp/recode-attack-{TAG}"                  # world-readable, like a data or jobs directory
TMP_SECRET = f"/tmp/recode-attack-{TAG}-expected.txt"      # a world-readable file directly in /tmp
UNIX_SOCKET = f"/tmp/recode-attack-{TAG}.sock"
ABSTRACT_SOCKET = f"\0recode-attack-{TAG}"
TOKENS = {name: f"{name}-{secrets.token_hex(6)}" for name in
          ("dirsecret", "tmpsecret", "globsecret", "socksecret", "abstractsecret", "jobsfile", "shm", "msg", "mq",
           "key", "shmfile", "cwdfile")}
SEM_VALUE = 1000 + secrets.randbelow(30000)
SOURCE_TOKEN = "answer-in-this-test-file-5be2c0"           # found by reading this file from inside the sandbox
DROP_DIRS = ("/run/lock", "/tmp", "/var/tmp", "/dev/shm")


def src(text, **subs):
    """Dedent a program and fill its @NAME@ placeholders (braces stay free for the programs' own code)."""
    text = textwrap.dedent(text).lstrip("\n")
    for key, value in subs.items():
        text = text.replace(f"@{key}@", str(value))
    assert "@" not in text.replace("@classmethod", "").replace("@contextlib", ""), text
    return text


# ---- test specifications (one per shape of benchmark) --------------------------------------------------------------

ADD = {"type": "assert", "program": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
                                    "    assert candidate(-1, 1) == 0\n\ncheck(add)\n"}
SQUARE_ABS = {"type": "assert", "program": "def check(candidate):\n    assert abs(candidate(2.0) - 4.0) < 1e-9\n"
                                           "    assert abs(candidate(3.0) - 9.0) < 1e-9\n\ncheck(square)\n"}
MBPP_SET = {"type": "assert", "program": "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))\n"
                                         "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == set((3, 4))\n"}
SORTED = {"type": "assert", "program": "def check(candidate):\n    assert sorted(candidate([3, 1, 2])) == [1, 2, 3]\n"
                                       "    assert sorted(candidate([9, 7])) == [7, 9]\n\ncheck(evens_first)\n"}
ROUND = {"type": "assert", "program": "assert round(sqrt2(), 4) == 1.4142\nassert round(sqrt2() ** 2, 4) == 2.0\n"}
CONTEXT = {"type": "assert", "program": "def check(candidate):\n    with candidate(3) as value:\n"
                                        "        assert value == 9\n\ncheck(squared)\n"}
NP_TESTING = {"type": "assert", "program": "import numpy as np\ndef check(candidate):\n"
                                           "    np.testing.assert_allclose(candidate([1.0, 2.5]), [2.0, 5.0])\n\n"
                                           "check(double)\n"}
HUMANEVAL_32 = {"type": "assert",
                "prelude": "import math\n\ndef poly(xs: list, x: float):\n"
                           "    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])\n",
                "program": src("""
                    import math
                    import random
                    rng = random.Random(42)
                    import copy
                    def check(candidate):
                        for _ in range(20):
                            ncoeff = 2 * rng.randint(1, 4)
                            coeffs = []
                            for _ in range(ncoeff):
                                coeff = rng.randint(-10, 10)
                                if coeff == 0:
                                    coeff = 1
                                coeffs.append(coeff)
                            solution = candidate(copy.deepcopy(coeffs))
                            assert math.fabs(poly(coeffs, solution)) < 1e-4

                    check(find_zero)
                """)}
UT = {"type": "unittest", "program": src("""
    import unittest
    class TestCases(unittest.TestCase):
        def test_example(self):
            self.assertEqual(task_func(1), 2)
        def test_hidden(self):
            self.assertEqual(task_func(5), 6)
            self.assertTrue(task_func(-3) == -2)
""")}
UT_STR = {"type": "unittest", "program": src("""
    import unittest
    class TestCases(unittest.TestCase):
        def test_upper(self):
            self.assertEqual(task_func('abc'), 'ABC')
            self.assertEqual(task_func('xY'), 'XY')
""")}
UT_LEN = {"type": "unittest", "program": src("""
    import unittest
    class TestCases(unittest.TestCase):
        def test_len(self):
            self.assertEqual(len(task_func(3)), 3)
            self.assertEqual(len(task_func(5)), 5)
""")}
UT_CONTEXT = {"type": "unittest", "program": src("""
    import unittest
    class TestCases(unittest.TestCase):
        def test_value(self):
            with task_func(3) as value:
                self.assertEqual(value, 9)
""")}
UT_NP = {"type": "unittest", "program": src("""
    import unittest
    import numpy as np
    class TestCases(unittest.TestCase):
        def test_squares(self):
            np.testing.assert_array_equal(task_func(4), [0, 1, 4, 9])
""")}
UT_PANDAS = {"type": "unittest", "program": src("""
    import unittest
    import pandas as pd
    class TestCases(unittest.TestCase):
        def test_frame(self):
            pd.testing.assert_frame_equal(task_func(2), pd.DataFrame({'x': [0, 1], 'y': [0, 2]}))
""")}
CALL = {"type": "call", "fn_name": "f", "cases": [{"args": [3], "expected": 9}, {"args": [4], "expected": 16},
                                                  {"args": [5], "expected": 25}]}
STDIO = {"type": "stdio", "cases": [{"input": "3\n", "output": "9\n"}, {"input": "12\n", "output": "144\n"}]}


def call_expecting(value, fn="f"):
    """A call test whose one case expects a value the program can only know by reaching outside its sandbox."""
    return {"type": "call", "fn_name": fn, "cases": [{"args": [], "expected": value}]}


# Snippets the attacks share. FIND_REPORT walks the stack for the harness's reporting function (today a closure
# named `report` in a frame above the program); NOTHING is what is used when there is none to find.
FIND_REPORT = src("""
    import sys as _sys
    def find_report():
        frame = _sys._getframe()
        while frame is not None:
            fn = frame.f_locals.get('report')
            if callable(fn):
                return fn
            frame = frame.f_back
        return lambda *a: None
""")
HEX32 = "import re as _re\nHEX32 = _re.compile(r'(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])')\n"
FORGE_DONE = src("""
    import os as _os
    def forge_done(nonces):
        for nonce in nonces:
            for fd in range(3, 8):
                try:
                    _os.write(fd, f'{nonce} done ["passed", 2, 2, ""]\\n'.encode())
                except OSError:
                    pass
        _os._exit(0)
""")
WRONG_ADD = "def add(a, b):\n    return 0\n"
WRONG_UT = "def task_func(x):\n    return 2\n"        # right on the example only, as a policy that read it would be
WRONG_CALL = "def f(x):\n    return 9\n"             # right on case 0 only
RIGHT = {"assert": ("def add(a, b):\n    return a + b\n", ADD),
         "unittest": ("def task_func(x):\n    return x + 1\n", UT),
         "call": ("def f(x):\n    return x * x\n", CALL),
         "stdio": ("print(int(input()) ** 2)\n", STDIO)}


# ---- attacks that run as single jobs -------------------------------------------------------------------------------
# (id, code, tests); the id names the class (c1..c8) and the trick.

# rewrites any 4-item report the harness encodes with json into a pass
VERDICT_LIAR = src("""
    import json
    class Liar(json.JSONEncoder):
        def encode(self, o):
            if isinstance(o, list) and len(o) == 4 and isinstance(o[0], str):
                o = ['passed', 2, 2, '']
            return super().encode(o)
    json._default_encoder = Liar()
""")

ATTACKS = [
    # 1. the report channel's secret is readable by the program
    ("c1-getframe-calls-report", FIND_REPORT + "find_report()('done', '[\"passed\", 2, 2, \"\"]')\n"
     "import os\nos._exit(0)\n" + WRONG_ADD, ADD),
    ("c1-framewalk-hex-in-locals-and-closures", HEX32 + FORGE_DONE + src("""
        import sys
        found = set()
        frame = sys._getframe()
        while frame is not None:
            for value in list(frame.f_locals.values()):
                seen = [value]
                for cell in getattr(value, '__closure__', None) or ():
                    try:
                        seen.append(cell.cell_contents)
                    except ValueError:
                        pass
                found.update(v for v in seen if isinstance(v, str) and HEX32.fullmatch(v))
            frame = frame.f_back
        if found:
            forge_done(found)
    """) + WRONG_UT, UT),
    ("c1-gc-scan-closure-cells", HEX32 + FORGE_DONE + src("""
        import gc, types
        found = set()
        for obj in gc.get_objects():
            if isinstance(obj, types.FunctionType) and obj.__closure__:
                for cell in obj.__closure__:
                    try:
                        v = cell.cell_contents
                    except ValueError:
                        continue
                    if isinstance(v, str) and HEX32.fullmatch(v):
                        found.add(v)
        if found:
            forge_done(found)
    """) + WRONG_ADD, ADD),
    ("c1-traceback-frame-walk", src("""
        import os
        try:
            raise ValueError
        except ValueError as e:
            frame = e.__traceback__.tb_frame
        while frame is not None:
            if callable(frame.f_locals.get('report')):
                frame.f_locals['report']('done', '["passed", 2, 2, ""]')
                os._exit(0)
            frame = frame.f_back
    """) + WRONG_UT, UT),
    ("c1-generator-frame-f-back", src("""
        import os, sys
        def climb():
            yield sys._getframe().f_back
        frame = next(climb())
        while frame is not None:
            if callable(frame.f_locals.get('report')):
                frame.f_locals['report']('done', '["passed", 2, 2, ""]')
                os._exit(0)
            frame = frame.f_back
    """) + WRONG_ADD, ADD),
    ("c1-signal-handler-frame-during-tests", src("""
        import os, signal, time
        def handler(signum, frame):
            while frame is not None:
                if callable(frame.f_locals.get('report')):
                    frame.f_locals['report']('done', '["passed", 2, 2, ""]')
                    os._exit(0)
                frame = frame.f_back
        signal.signal(signal.SIGALRM, handler)
        def add(a, b):
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
            return 0
    """), ADD),
    ("c1-inspect-stack-inside-unittest", src("""
        import inspect, os
        def task_func(x):
            for info in inspect.stack():
                if callable(info.frame.f_locals.get('report')):
                    info.frame.f_locals['report']('done', '["passed", 2, 2, ""]')
                    os._exit(0)
            return 2
    """), UT),
    ("c1-proc-self-mem-scan", src("""
        import ctypes, os, re
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)     # PR_SET_DUMPABLE, so /proc/self/mem opens after the uid switch
        found = set()
        try:
            with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
                for line in maps:
                    span, perms, *rest = line.split()
                    lo, hi = (int(x, 16) for x in span.split('-'))
                    # the heap and anonymous arenas hold Python's strings; skip big buffers and library data
                    if not perms.startswith('rw') or hi - lo > 16 << 20 or rest[3:] not in ([], ['[heap]']):
                        continue
                    try:
                        mem.seek(lo)
                        found.update(re.findall(rb'(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])', mem.read(hi - lo)))
                    except (OSError, ValueError, OverflowError):
                        pass
        except OSError:
            pass
        for nonce in list(found)[:20000]:
            os.write(3, nonce + b' done ["passed", 2, 2, ""]\\n')
        os._exit(0)
    """), ADD),
    ("c1-call-forges-every-case-as-case-0", FIND_REPORT + src("""
        import os
        report = find_report()
        for _ in range(3):
            report('case', '[0, true, 9, 0.0]')
        os._exit(0)
    """) + WRONG_CALL, CALL),

    # 2. the harness's own tools are the program's to patch
    ("c2-json-default-encoder-rewrites-verdict", VERDICT_LIAR + WRONG_ADD, ADD),
    ("c2-json-default-encoder-unittest", VERDICT_LIAR + WRONG_UT, UT),
    ("c2-json-encoder-relabels-call-cases", src("""
        import json
        class Liar(json.JSONEncoder):
            def encode(self, o):
                if isinstance(o, list) and len(o) == 4 and type(o[0]) is int and o[1] is True:
                    o = [0, True, 9, o[3]]
                return super().encode(o)
        json._default_encoder = Liar()
    """) + WRONG_CALL, CALL),
    ("c2-builtins-enumerate-always-case-0", src("""
        import builtins
        _enumerate = builtins.enumerate
        def enumerate(items, start=0):
            if type(items) is list and items and type(items[0]) is dict and 'args' in items[0]:
                return [(0, items[0])] * len(items)
            return _enumerate(items, start)
        builtins.enumerate = enumerate
    """) + WRONG_CALL, CALL),
    ("c2-patch-harness-function-looked-up-after-the-program", src("""
        import json, sys
        harness = sys.modules['__main__']
        def run_cases(payload, namespace, report, dumps):
            for _ in payload['cases']:
                report('case', json.dumps([0, True, 9, 0.0]))
        if hasattr(harness, '_run_call_cases'):
            harness._run_call_cases = run_cases
    """) + WRONG_CALL, CALL),
    ("c2-assertequal-code-swap-keeps-identity", src("""
        import unittest
        unittest.TestCase.assertEqual.__code__ = (lambda self, first, second, msg=None: None).__code__
        unittest.TestCase.assertTrue.__code__ = (lambda self, expr, msg=None: None).__code__
    """) + WRONG_UT, UT),
    ("c2-audit-hook-repatches-unittest-after-restore", src("""
        import sys, unittest
        busy = []
        def hook(event, args):
            if busy or event not in ('exec', 'compile'):
                return
            busy.append(1)
            try:
                unittest.TestCase.assertEqual = lambda *a, **k: None
                unittest.TestCase.assertTrue = lambda *a, **k: None
            finally:
                busy.pop()
        sys.addaudithook(hook)
    """) + WRONG_UT, UT),
    ("c2-audit-hook-repatches-builtin-abs", src("""
        import builtins, sys
        def hook(event, args):
            if event == 'exec':
                builtins.abs = lambda x: 0
        sys.addaudithook(hook)
        def square(x):
            return 0.0
    """), SQUARE_ABS),
    ("c2-setitimer-repatches-unittest", src("""
        import signal, time, unittest
        def again(*_):
            unittest.TestCase.assertEqual = lambda *a, **k: None
            unittest.TestCase.assertTrue = lambda *a, **k: None
        signal.signal(signal.SIGALRM, again)
        signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
        def task_func(x):
            time.sleep(0.05)
            return 2
    """), UT),
    ("c2-call-during-test-drops-failures", src("""
        import unittest
        def task_func(x):
            unittest.TestResult.addFailure = lambda *a, **k: None
            unittest.TestResult.addError = lambda *a, **k: None
            return 2
    """), UT),
    ("c2-first-call-patches-builtin-abs", src("""
        import builtins
        def square(x):
            builtins.abs = lambda v: 0
            return 4.0
    """), SQUARE_ABS),

    # 3. values the guard trusts
    ("c3-stdlib-fraction-eq-patched", src("""
        import fractions
        fractions.Fraction.__eq__ = lambda self, other: True
        def add(a, b):
            return fractions.Fraction(0)
    """), ADD),
    ("c3-stdlib-counter-eq-patched", src("""
        import collections
        collections.Counter.__eq__ = lambda self, other: True
        def add(a, b):
            return collections.Counter()
    """), ADD),
    ("c3-mock-any", "from unittest import mock\ndef add(a, b):\n    return mock.ANY\n", ADD),
    ("c3-mock-any-unittest", "from unittest import mock\ndef task_func(x):\n    return mock.ANY\n", UT),
    ("c3-borrowed-library-eq-function", src("""
        from unittest import mock
        class Everything:
            __eq__ = mock._ANY.__eq__
            __hash__ = None
        def add(a, b):
            return Everything()
    """), ADD),
    ("c3-subclass-of-library-any", src("""
        from unittest import mock
        class Everything(mock._ANY):
            pass
        def add(a, b):
            return Everything()
    """), ADD),
    ("c3-eq-code-claims-library-file", src("""
        import json
        def eq(self, other):
            return True
        eq.__code__ = eq.__code__.replace(co_filename=json.__file__)
        class Everything:
            __eq__ = eq
            __hash__ = None
        def add(a, b):
            return Everything()
    """), ADD),
    ("c3-eq-code-claims-the-test-file", src("""
        import sys
        def eq(self, other):
            return True
        frame = sys._getframe()
        while frame is not None:
            name = frame.f_locals.get('test_file')
            if isinstance(name, str):
                eq.__code__ = eq.__code__.replace(co_filename=name)
            frame = frame.f_back
        class Everything:
            __eq__ = eq
            __hash__ = None
        def add(a, b):
            return Everything()
    """), ADD),
    ("c3-magicmock-eq-true", src("""
        from unittest import mock
        def add(a, b):
            m = mock.MagicMock()
            m.__eq__.return_value = True
            return m
    """), ADD),
    ("c3-class-reassigned-to-any", src("""
        from unittest import mock
        class Plain:
            pass
        def add(a, b):
            value = Plain()
            value.__class__ = mock._ANY
            return value
    """), ADD),
    ("c3-stdlib-userstring-eq-patched-unittest", src("""
        import collections
        collections.UserString.__eq__ = lambda self, other: True
        def task_func(s):
            return collections.UserString('')
    """), UT_STR),

    # 4. names the test resolves through the program
    ("c4-global-named-abs", "abs = lambda x: 0\ndef square(x):\n    return 0.0\n", SQUARE_ABS),
    ("c4-global-named-set-mbpp", "set = lambda *a: frozenset()\ndef similar_elements(a, b):\n    return ()\n",
     MBPP_SET),
    ("c4-global-named-sorted", "answers = iter([[1, 2, 3], [7, 9]])\nsorted = lambda xs, **k: next(answers)\n"
                               "def evens_first(xs):\n    return []\n", SORTED),
    ("c4-global-named-round", "answers = iter([1.4142, 2.0])\nround = lambda x, n=None: next(answers)\n"
                              "def sqrt2():\n    return 1.0\n", ROUND),
    ("c4-global-named-len-unittest", "len = lambda xs: xs[0]\ndef task_func(n):\n    return [n]\n", UT_LEN),
    ("c4-global-named-like-prelude-helper-poly", "def poly(xs, x):\n    return 0.0\n\n"
                                                 "def find_zero(xs):\n    return 0.0\n", HUMANEVAL_32),
    ("c4-exit-returning-true-swallows-assert", src("""
        class Swallow:
            def __enter__(self):
                return 0
            def __exit__(self, *exc):
                return True
        def squared(x):
            return Swallow()
    """), CONTEXT),
    ("c4-exit-returning-true-unittest", src("""
        class Swallow:
            def __enter__(self):
                return 0
            def __exit__(self, *exc):
                return True
        def task_func(x):
            return Swallow()
    """), UT_CONTEXT),
    ("c4-own-testcase-runs-first-and-blanks-tests", src("""
        import unittest
        class AAA(unittest.TestCase):
            @classmethod
            def setUpClass(cls):
                for case in unittest.TestCase.__subclasses__():
                    if case is not cls:
                        for name in list(vars(case)):
                            if name.startswith('test'):
                                setattr(case, name, lambda self: None)
            def test_nothing(self):
                pass
    """) + WRONG_UT, UT),
    ("c4-own-testcase-patches-result-object", src("""
        import unittest
        class AAA(unittest.TestCase):
            def run(self, result=None):
                result.addFailure = result.addError = lambda *a, **k: None
                return super().run(result)
            def test_nothing(self):
                pass
    """) + WRONG_UT, UT),
    ("c4-numpy-testing-patched-submodule", src("""
        import numpy.testing
        numpy.testing.assert_allclose = lambda *a, **k: None
        def double(xs):
            return [0.0]
    """), NP_TESTING),
    ("c4-pandas-testing-patched-submodule", src("""
        import pandas
        import pandas.testing
        pandas.testing.assert_frame_equal = lambda *a, **k: None
        def task_func(n):
            return pandas.DataFrame({'x': [5]})
    """), UT_PANDAS),

    # 5. the host is visible (each program passes only if it read or reached what the test put on the host)
    ("c5-read-secret-in-world-readable-dir", src("""
        def f():
            try:
                return open('@DIR@/expected.txt').read()
            except OSError as e:
                return f'refused: {e}'
    """, DIR=SECRET_DIR), call_expecting(TOKENS["dirsecret"])),
    ("c5-read-secret-file-in-tmp", src("""
        try:
            print(open('@PATH@').read())
        except OSError as e:
            print('refused', e)
    """, PATH=TMP_SECRET), {"type": "stdio", "cases": [{"input": "", "output": TOKENS["tmpsecret"]}]}),
    ("c5-glob-tmp-for-expected-outputs", src("""
        import glob, json
        def f():
            for path in glob.glob('/tmp/*/*.json') + glob.glob('/tmp/*.json'):
                try:
                    data = json.load(open(path))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict) and 'f' in data:
                    return data['f']
            return 'nothing found'
    """), call_expecting(TOKENS["globsecret"])),
    ("c5-connect-unix-socket-in-tmp", src("""
        import socket
        def f():
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1.0)
                s.connect('@PATH@')
                return s.recv(100).decode()
            except OSError as e:
                return f'refused: {e}'
    """, PATH=UNIX_SOCKET), call_expecting(TOKENS["socksecret"])),
    ("c5-connect-abstract-unix-socket", src("""
        import socket
        def f():
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1.0)
                s.connect('\\0' + '@NAME@')
                return s.recv(100).decode()
            except OSError as e:
                return f'refused: {e}'
    """, NAME=ABSTRACT_SOCKET[1:]), call_expecting(TOKENS["abstractsecret"])),
    ("c5-read-this-test-file", src("""
        import re
        def f():
            try:
                text = open('@PATH@').read()
            except OSError as e:
                return f'refused: {e}'
            m = re.search('answer-in-this-test-file-[0-9a-f]{6}', text)
            return m.group(0) if m else 'nothing found'
    """, PATH=THIS_FILE), call_expecting(SOURCE_TOKEN)),

    # 6. limits that do not bind (each program is right only if it got past a limit)
    ("c6-rlimit-as-soft-raised-to-hard", src("""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        except (ValueError, OSError):
            pass
        try:
            block = bytearray(800 << 20)
            ok = True
        except MemoryError:
            ok = False
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
    ("c6-rlimit-fsize-soft-raised-to-hard", src("""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        except (ValueError, OSError):
            pass
        try:
            with open('big.bin', 'wb') as f:
                for _ in range(80):
                    f.write(b'0' * (1 << 20))
            ok = True
        except OSError:
            ok = False
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
    ("c6-rlimit-nofile-soft-raised-to-hard", src("""
        import os, resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
        fds = []
        try:
            for _ in range(max(soft, 1024) + 100):
                fds.append(os.dup(0))
            ok = True
        except OSError:
            ok = False
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
    ("c6-rlimit-nproc-soft-raised-to-hard", src("""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
            ok = resource.getrlimit(resource.RLIMIT_NPROC)[0] > soft
        except (ValueError, OSError):
            ok = False
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
    ("c6-memory-cap-per-process-forked-children", src("""
        import os, time
        def child():
            try:
                block = bytearray(200 << 20)
                time.sleep(0.4)
                os._exit(0)
            except MemoryError:
                os._exit(1)
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                child()
            pids.append(pid)
        ok = all(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in pids)
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
    ("c6-memory-cap-per-process-subprocesses", src("""
        import subprocess, sys
        grab = 'import time\\nb = bytearray(200 << 20)\\ntime.sleep(0.4)'
        procs = [subprocess.Popen([sys.executable, '-c', grab]) for _ in range(4)]
        ok = all(p.wait() == 0 for p in procs)
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
    ("c6-memory-cap-per-thread-group-via-mmap-children", src("""
        import mmap, os, time
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                try:
                    m = mmap.mmap(-1, 200 << 20)
                    for i in range(0, len(m), 4096):
                        m[i] = 1
                    time.sleep(0.4)
                    os._exit(0)
                except (OSError, MemoryError):
                    os._exit(1)
            pids.append(pid)
        ok = all(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in pids)
        def add(a, b):
            return a + b if ok else 0
    """), ADD),
]

# Programs that try to leave a file on the host; the tests look for it after the run (the verdict is irrelevant).
DROPS = [(f"c5-drop-file-in-{d.strip('/').replace('/', '-')}", d) for d in DROP_DIRS]
for drop_id, drop_dir in DROPS:
    ATTACKS.append((drop_id, src("""
        for path in ['@DIR@/recode-attack-@TAG@-drop', '@DIR@/recode-attack-@TAG@-dir/x']:
            try:
                import os
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, 'w').write('left behind')
            except OSError:
                pass
        def add(a, b):
            return a + b
    """, DIR=drop_dir, TAG=TAG), ADD))
DROP_IDS = {drop_id for drop_id, _ in DROPS}


# ---- controls: right programs must pass, wrong ones must fail -------------------------------------------------------

CONTROLS = [(f"right-{kind}", code, tests, "passed") for kind, (code, tests) in RIGHT.items()] + [
    ("wrong-assert", WRONG_ADD, ADD, "failed"),
    ("wrong-unittest", WRONG_UT, UT, "failed"),
    ("wrong-call", WRONG_CALL, CALL, "failed"),
    ("wrong-stdio", "print(9)\n", STDIO, "failed"),
    ("wrong-prelude-humaneval-32", "import math\ndef poly(xs, x):\n    return sum(c * x ** i for i, c in "
                                   "enumerate(xs))\ndef find_zero(xs):\n    return 0.5\n", HUMANEVAL_32, "failed"),
    # 8. right programs that use what benchmark solutions use
    ("c8-right-prelude-humaneval-32", src("""
        import math
        def poly(xs: list, x: float):
            return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])
        def find_zero(xs: list):
            begin, end = -1.0, 1.0
            while poly(xs, begin) * poly(xs, end) > 0:
                begin *= 2.0
                end *= 2.0
            while end - begin > 1e-10:
                center = (begin + end) / 2.0
                if poly(xs, center) * poly(xs, begin) > 0:
                    begin = center
                else:
                    end = center
            return begin
    """), HUMANEVAL_32, "passed"),
    ("c8-np-testing-after-program-imported-numpy", "import numpy as np\ndef double(xs):\n"
                                                   "    return np.asarray(xs) * 2\n", NP_TESTING, "passed"),
    ("c8-np-testing-unittest-program-imported-numpy-testing", "import numpy as np\nimport numpy.testing\n"
     "def task_func(n):\n    return np.arange(n) ** 2\n", UT_NP, "passed"),
    ("c8-numpy-result-call", "import numpy as np\ndef f(x):\n    return np.int64(x) ** 2\n", CALL, "passed"),
    ("c8-multiprocessing-lock", src("""
        import multiprocessing
        lock = multiprocessing.Lock()
        def f(x):
            with lock:
                return x * x
    """), CALL, "passed"),
    ("c8-multiprocessing-pool", src("""
        import multiprocessing, operator
        def f(x):
            with multiprocessing.Pool(2) as pool:
                return pool.starmap(operator.mul, [(x, x)])[0]
    """), CALL, "passed"),
    ("c8-tempfile-dirs-and-files", src("""
        import os, tempfile
        def add(a, b):
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, 'n')
                open(path, 'w').write(str(a + b))
                with tempfile.NamedTemporaryFile('w+') as f:
                    f.write(open(path).read())
                    f.seek(0)
                    return int(f.read())
    """), ADD, "passed"),
    ("c8-threads-that-finish", src("""
        import threading
        from concurrent.futures import ThreadPoolExecutor
        def f(x):
            with ThreadPoolExecutor(4) as pool:
                parts = list(pool.map(lambda _: x, range(x)))
            done = []
            t = threading.Thread(target=lambda: done.append(sum(parts)))
            t.start()
            t.join()
            return done[0]
    """), CALL, "passed"),
    ("c8-threads-that-finish-unittest", src("""
        import threading
        def task_func(x):
            out = []
            t = threading.Thread(target=lambda: out.append(x + 1))
            t.start()
            t.join()
            return out[0]
    """), UT, "passed"),
    ("c8-subprocess-that-finishes-stdio", src("""
        import subprocess, sys
        n = input()
        r = subprocess.run([sys.executable, '-c', 'print(int(input()) ** 2)'], input=n + '\\n',
                           capture_output=True, text=True, timeout=5)
        print(r.stdout.strip())
    """), STDIO, "passed"),
    ("c8-subprocess-that-finishes-assert", src("""
        import subprocess, sys
        def add(a, b):
            r = subprocess.run([sys.executable, '-c', f'print({a} + {b})'], capture_output=True, text=True)
            return int(r.stdout)
    """), ADD, "passed"),
    ("c8-python-values-keep-their-types", src("""
        def values():
            return (1, 2), {3, 4}, {5: 'a'}, b'xy', None, 2 ** 80, 1.5, [True, 0], frozenset({6}), 1 + 2j
    """), {"type": "assert", "program": src("""
        def check(candidate):
            t, s, d, b, n, big, fl, mixed, fs, c = candidate()
            assert t == (1, 2) and isinstance(t, tuple)
            assert s == {3, 4} and isinstance(s, set)
            assert d == {5: 'a'} and list(d) == [5]
            assert b == b'xy' and n is None and big == 2 ** 80 and fl == 1.5
            assert mixed == [True, 0] and mixed[0] is True and type(mixed[1]) is int
            assert fs == frozenset({6}) and c == 1 + 2j

        check(values)
    """)}, "passed"),
    ("c8-mutates-its-argument-in-place", "def sort_in_place(xs):\n    xs.sort()\n",
     {"type": "assert", "program": "xs = [3, 1, 2]\nassert sort_in_place(xs) is None\nassert xs == [1, 2, 3]\n"},
     "passed"),
    ("c8-raises-the-expected-exception", "def root(x):\n    if x < 0:\n        raise ValueError('negative')\n"
                                         "    return x ** 0.5\n",
     {"type": "assert", "program": src("""
        def check(candidate):
            assert candidate(4) == 2.0
            try:
                candidate(-1)
            except ValueError as e:
                assert 'negative' in str(e)
            else:
                assert False, 'no ValueError'

        check(root)
    """)}, "passed"),
    ("c8-unittest-assertraises-and-helper-class", src("""
        class Account:
            def __init__(self, balance):
                self.balance = balance
        def task_func(account, amount):
            if amount > account.balance:
                raise ValueError('insufficient funds')
            account.balance -= amount
            return account.balance
    """), {"type": "unittest", "program": src("""
        import unittest
        class TestCases(unittest.TestCase):
            def test_withdraw(self):
                self.assertEqual(task_func(Account(10), 3), 7)
            def test_overdraw(self):
                with self.assertRaises(ValueError):
                    task_func(Account(1), 5)
    """)}, "passed"),
    ("c8-files-in-cwd-and-recursion", src("""
        import sys
        sys.setrecursionlimit(5000)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        def f(x):
            open('scratch.txt', 'w').write(str(x * x))
            assert depth(2000) == 2000
            return int(open('scratch.txt').read())
    """), CALL, "passed"),
]


# ---- pairs: an attack, then a job on the same worker (workers=1) --------------------------------------------------
# (id, first job, then job, what the second must be): "passed" for a right program that must not be broken by
# what the first left behind; "not rewarded" for a probe that is right only if it found what the first left.

def sysv(body):
    return "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n" + src(body)


SHM_KEY, MSG_KEY, SEM_KEY = (0x5EC0000 + secrets.randbelow(1 << 16) for _ in range(3))
MQ_NAME = f"/recode-attack-{TAG}"
KEY_DESC = f"recode-attack-{TAG}"
OK = call_expecting("ok")
LEAVE_OK = "def f():\n    return 'ok'\n"
FOLLOW_RIGHT_FILES = ("import os, tempfile\ndef f(x):\n    open('mine.txt', 'w').write('x')\n"
                      "    fd, path = tempfile.mkstemp()\n    os.close(fd)\n    os.makedirs('sub/dir', exist_ok=True)\n"
                      "    return x * x\n")

PAIRS = [
    # 6. state that outlives a run
    ("c6-sysv-shm-survives-to-next-job",
     (sysv("""
        libc.shmat.restype = ctypes.c_void_p
        libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        shmid = libc.shmget(@KEY@, 4096, 0o1666)
        if shmid >= 0:
            addr = libc.shmat(shmid, None, 0)
            if addr not in (None, 2 ** 64 - 1):
                ctypes.memmove(addr, b'@TOKEN@', len(b'@TOKEN@'))
     """.replace("@KEY@", str(SHM_KEY)).replace("@TOKEN@", TOKENS["shm"])) + LEAVE_OK, OK),
     (sysv("""
        libc.shmat.restype = ctypes.c_void_p
        libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        found = 'nothing'
        shmid = libc.shmget(@KEY@, 4096, 0)
        if shmid >= 0:
            addr = libc.shmat(shmid, None, 0o10000)
            if addr not in (None, 2 ** 64 - 1):
                found = ctypes.string_at(addr, @LEN@).decode()
        def f():
            return found
     """.replace("@KEY@", str(SHM_KEY)).replace("@LEN@", str(len(TOKENS["shm"])))), call_expecting(TOKENS["shm"])),
     "not rewarded"),
    ("c6-sysv-message-queue-survives-to-next-job",
     (sysv("""
        qid = libc.msgget(@KEY@, 0o1666)
        text = b'@TOKEN@'
        buf = ctypes.create_string_buffer(8 + len(text))
        ctypes.memmove(buf, (1).to_bytes(8, 'little') + text, 8 + len(text))
        if qid >= 0:
            libc.msgsnd(qid, buf, len(text), 0o4000)
     """.replace("@KEY@", str(MSG_KEY)).replace("@TOKEN@", TOKENS["msg"])) + LEAVE_OK, OK),
     (sysv("""
        found = 'nothing'
        qid = libc.msgget(@KEY@, 0)
        if qid >= 0:
            buf = ctypes.create_string_buffer(8 + 256)
            n = libc.msgrcv(qid, buf, 256, ctypes.c_long(0), 0o4000)
            if n > 0:
                found = buf.raw[8:8 + n].decode()
        def f():
            return found
     """.replace("@KEY@", str(MSG_KEY))), call_expecting(TOKENS["msg"])),
     "not rewarded"),
    ("c6-sysv-semaphore-survives-to-next-job",
     (sysv("""
        semid = libc.semget(@KEY@, 1, 0o1666)
        if semid >= 0:
            libc.semctl(semid, 0, 16, ctypes.c_int(@VALUE@))     # SETVAL
     """.replace("@KEY@", str(SEM_KEY)).replace("@VALUE@", str(SEM_VALUE))) + LEAVE_OK, OK),
     (sysv("""
        found = -1
        semid = libc.semget(@KEY@, 1, 0)
        if semid >= 0:
            found = libc.semctl(semid, 0, 12)                     # GETVAL
        def f():
            return found
     """.replace("@KEY@", str(SEM_KEY))), call_expecting(SEM_VALUE)),
     "not rewarded"),
    ("c6-posix-message-queue-survives-to-next-job",
     (sysv("""
        libc.mq_open.restype = ctypes.c_int
        mqd = libc.mq_open(b'@NAME@', 0o100 | 2, 0o666, None)       # O_CREAT | O_RDWR
        if mqd >= 0:
            libc.mq_send(mqd, b'@TOKEN@', len(b'@TOKEN@'), 0)
     """.replace("@NAME@", MQ_NAME).replace("@TOKEN@", TOKENS["mq"])) + LEAVE_OK, OK),
     (sysv("""
        found = 'nothing'
        mqd = libc.mq_open(b'@NAME@', 2 | 0o4000)                 # O_RDWR | O_NONBLOCK
        if mqd >= 0:
            buf = ctypes.create_string_buffer(1 << 16)
            n = libc.mq_receive(mqd, buf, 1 << 16, None)
            if n > 0:
                found = buf.raw[:n].decode()
        def f():
            return found
     """.replace("@NAME@", MQ_NAME)), call_expecting(TOKENS["mq"])),
     "not rewarded"),
    ("c6-keyring-survives-to-next-job",
     (sysv("""
        libc.syscall(248, b'user', b'@DESC@', b'@TOKEN@', len(b'@TOKEN@'), ctypes.c_long(-4))   # add_key
     """.replace("@DESC@", KEY_DESC).replace("@TOKEN@", TOKENS["key"])) + LEAVE_OK, OK),
     (sysv("""
        found = 'nothing'
        serial = libc.syscall(249, b'user', b'@DESC@', None, ctypes.c_long(0))       # request_key
        if serial > 0:
            buf = ctypes.create_string_buffer(256)
            n = libc.syscall(250, ctypes.c_long(11), ctypes.c_long(serial), buf, ctypes.c_long(256))  # KEYCTL_READ
            if n > 0:
                found = buf.raw[:n].decode()
        def f():
            return found
     """.replace("@DESC@", KEY_DESC)), call_expecting(TOKENS["key"])),
     "not rewarded"),
    ("c6-dev-shm-file-survives-to-next-job",
     ("try:\n    open('/dev/shm/recode-attack-@TAG@', 'w').write('@TOKEN@')\nexcept OSError:\n    pass\n"
      .replace("@TAG@", TAG).replace("@TOKEN@", TOKENS["shmfile"]) + LEAVE_OK, OK),
     ("def f():\n    try:\n        return open('/dev/shm/recode-attack-@TAG@').read()\n"
      "    except OSError:\n        return 'nothing'\n".replace("@TAG@", TAG), call_expecting(TOKENS["shmfile"])),
     "not rewarded"),
    ("c6-cwd-file-survives-to-next-job",
     ("import os\nopen('.answer', 'w').write('@TOKEN@')\nos.makedirs('keep/me', exist_ok=True)\n"
      "open('keep/me/answer', 'w').write('@TOKEN@')\n".replace("@TOKEN@", TOKENS["cwdfile"]) + LEAVE_OK, OK),
     ("def f():\n    for p in ('.answer', 'keep/me/answer'):\n        try:\n            return open(p).read()\n"
      "        except OSError:\n            pass\n    return 'nothing'\n", call_expecting(TOKENS["cwdfile"])),
     "not rewarded"),
    ("c6-chmod-000-scratch-dir-breaks-next-job",
     ("import os\nos.chmod('.', 0)\n" + LEAVE_OK, OK), (FOLLOW_RIGHT_FILES, CALL), "passed"),
    ("c6-chmod-555-scratch-dir-breaks-next-job",
     ("import os\nos.chmod('.', 0o555)\n" + LEAVE_OK, OK),
     (FOLLOW_RIGHT_FILES, CALL), "passed"),

    # 7. program-made harness errors and crashes: the attack is the program's failure, the next job is judged right
    ("c7-garbage-on-stdout-and-stderr",
     (src("""
        import os, struct, sys
        junk = [b'\\xff\\xfe\\x00garbage\\n', struct.pack('<Q', 10 ** 12), b'0' * 32 + b' done ["passed", 1, 1, ""]\\n',
                struct.pack('<Q', 37) + b'{"end": {"done": ["passed", 1, 1, ""]}}']
        for j in junk * 100:
            os.write(1, j)
            os.write(2, j)
        print(9)
     """), STDIO), RIGHT["stdio"], "passed"),
    ("c7-garbage-on-report-fd-without-newline",
     ("import os\nfor _ in range(128):\n    os.write(3, b'x' * 65536)\n" + WRONG_CALL, CALL), RIGHT["call"], "passed"),
    ("c7-garbage-on-every-inherited-fd",
     (src("""
        import os, struct
        junk = [b'\\xff\\xfe garbage\\n', struct.pack('<Q', 10 ** 12),
                struct.pack('<Q', 37) + b'{"end": {"done": ["passed", 1, 1, ""]}}',
                b'0' * 32 + b' done ["passed", 1, 1, ""]\\n', b'{"go_on": true}\\n']
        for fd in range(1024):
            for j in junk:
                try:
                    os.write(fd, j)
                except OSError:
                    pass
     """) + WRONG_ADD, ADD), RIGHT["assert"], "passed"),
    ("c7-report-case-index-out-of-range",
     (FIND_REPORT + "find_report()('case', '[7, true, 9, 0.0]')\n" + WRONG_CALL, CALL), RIGHT["call"], "passed"),
    ("c7-report-case-index-wrong-type",
     (FIND_REPORT + "find_report()('case', '[\"0\", true, 9, 0.0]')\n" + WRONG_CALL, CALL), RIGHT["call"], "passed"),
    ("c7-report-case-not-json",
     (FIND_REPORT + "find_report()('case', '{{{ not json')\n" + WRONG_CALL, CALL), RIGHT["call"], "passed"),
    ("c7-report-case-too-short",
     (FIND_REPORT + "find_report()('case', '[0, true]')\n" + WRONG_CALL, CALL), RIGHT["call"], "passed"),
    ("c7-report-done-wrong-type",
     (FIND_REPORT + "import os\nfind_report()('done', '\"passed\"')\nos._exit(0)\n" + WRONG_ADD, ADD),
     RIGHT["assert"], "passed"),
    ("c7-report-done-unknown-status",
     (FIND_REPORT + "import os\nfind_report()('done', '[\"excellent\", 1, 1, \"\"]')\nos._exit(0)\n" + WRONG_ADD,
      ADD), RIGHT["assert"], "passed"),
    ("c7-report-done-wrong-arity-unittest",
     (FIND_REPORT + "import os\nfind_report()('done', '[1, 2]')\nos._exit(0)\n" + WRONG_UT, UT),
     RIGHT["unittest"], "passed"),
    ("c7-os-exit-inside-assert-test",
     ("import os\ndef add(a, b):\n    os._exit(0)\n", ADD), RIGHT["assert"], "passed"),
    ("c7-os-exit-inside-unittest-test",
     ("import os\ndef task_func(x):\n    os._exit(0)\n", UT), RIGHT["unittest"], "passed"),
    ("c7-os-exit-inside-call",
     ("import os\ndef f(x):\n    if x == 4:\n        os._exit(0)\n    return x * x\n", CALL), RIGHT["call"], "passed"),
    ("c7-segfault-at-top-level",
     ("import ctypes\nctypes.string_at(0)\n" + WRONG_ADD, ADD), RIGHT["assert"], "passed"),
    ("c7-segfault-inside-unittest-test",
     ("import ctypes\ndef task_func(x):\n    ctypes.string_at(0)\n", UT), RIGHT["unittest"], "passed"),
    ("c7-segfault-inside-call",
     ("import ctypes\ndef f(x):\n    if x == 4:\n        ctypes.string_at(0)\n    return x * x\n", CALL),
     RIGHT["call"], "passed"),
    ("c7-result-nested-deeper-than-the-parent-decodes",
     ("import sys\nsys.setrecursionlimit(100000)\ndef f(x):\n    v = []\n    for _ in range(3000):\n"
      "        v = [v]\n    return v\n", CALL), RIGHT["call"], "passed"),
    ("c7-exception-whose-str-raises",
     ("class Weird(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
      "def add(a, b):\n    raise Weird()\n", ADD), RIGHT["assert"], "passed"),
    ("c7-system-exit-inside-assert-test",
     ("def add(a, b):\n    raise SystemExit(0)\n", ADD), RIGHT["assert"], "passed"),
    ("c7-keyboard-interrupt-inside-unittest-test",
     ("def task_func(x):\n    raise KeyboardInterrupt\n", UT), RIGHT["unittest"], "passed"),
    ("c7-huge-exception-message",
     ("def add(a, b):\n    raise ValueError('x' * (20 << 20))\n", ADD), RIGHT["assert"], "passed"),
    ("c7-cyclic-result-call",
     ("def f(x):\n    v = []\n    v.append(v)\n    return v\n", CALL), RIGHT["call"], "passed"),
    ("c7-cyclic-and-deep-values-in-assert-test",
     ("import sys\nsys.setrecursionlimit(100000)\ndef add(a, b):\n    if a == 1:\n        v = []\n"
      "        v.append(v)\n        return v\n    v = []\n    for _ in range(3000):\n        v = [v]\n"
      "    return v\n", ADD), RIGHT["assert"], "passed"),
    # last: today's sweep cannot remove this tree, so it would also break every pair after it
    ("c6-directory-tree-1200-deep-breaks-next-job",
     ("import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\n" + LEAVE_OK, OK),
     RIGHT["call"], "passed"),
]


# ---- the run: everything in one throwaway PID namespace, host objects made and removed here ------------------------

def job(job_id, code, tests):
    return {"id": job_id, "code": code, "tests": tests}


def run_batches(spec):
    """(Inside the namespace.) Run the main batch on two workers, then each pair on one worker in its own call.
    A batch that loses results (a worker died) is reported, and its lost jobs are rerun alone for their verdicts."""
    out = {"batch": {}, "pairs": {}, "lost": [], "seconds": {}}
    start = time.monotonic()
    jobs = spec["batch"]
    try:
        results = execute.run_jobs(jobs, workers=2, timeout=TIMEOUT, memory_mb=MEMORY_MB)
    except Exception as e:  # the batch itself crashed: every job is lost
        results = [None] * len(jobs)
        out["batch_exception"] = repr(e)
    for j, r in zip(jobs, results):
        if r is None:
            out["lost"].append(j["id"])
    for j, r in zip(jobs, results):
        if r is None:
            r = _run_alone([j], workers=2)[0]
            if r is not None:
                r = dict(r, rerun_alone=True)
        out["batch"][j["id"]] = r
    out["seconds"]["batch"] = time.monotonic() - start
    start = time.monotonic()
    for pair_id, first, then in spec["pairs"]:
        pair_start = time.monotonic()
        results = _run_alone([first, then], workers=1)
        out["seconds"][pair_id] = round(time.monotonic() - pair_start, 2)
        out["pairs"][pair_id] = results
        if any(r is None or r["status"].startswith("run_jobs raised") for r in results):
            execute.start_pool(2)       # a fresh zygote for the next pair, so one broken pair does not hide others
            execute.start_pool(1)
    out["seconds"]["pairs"] = time.monotonic() - start
    return out


def _run_alone(jobs, workers):
    try:
        return execute.run_jobs(jobs, workers=workers, timeout=TIMEOUT, memory_mb=MEMORY_MB)
    except Exception as e:
        return [{"status": f"run_jobs raised {e!r}", "detail": ""}] * len(jobs)


class HostBait:
    """What the host-isolation attacks look for: secret files in world-readable places and listening sockets."""

    def __init__(self):
        os.makedirs(SECRET_DIR)
        os.chmod(SECRET_DIR, 0o755)
        for path, text in [(os.path.join(SECRET_DIR, "expected.txt"), TOKENS["dirsecret"]),
                           (os.path.join(SECRET_DIR, "answers.json"), json.dumps({"f": TOKENS["globsecret"]})),
                           (TMP_SECRET, TOKENS["tmpsecret"])]:
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
        self.stop = threading.Event()
        self.connections = []
        self.servers = []
        for address, token in [(UNIX_SOCKET, TOKENS["socksecret"]), (ABSTRACT_SOCKET, TOKENS["abstractsecret"])]:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(address)
            if not address.startswith("\0"):
                os.chmod(address, 0o777)
            server.listen(16)
            server.settimeout(0.1)
            thread = threading.Thread(target=self._serve, args=(server, token), daemon=True)
            thread.start()
            self.servers.append((server, thread))
        self.before = {d: set(os.listdir(d)) for d in DROP_DIRS if os.path.isdir(d)}

    def _serve(self, server, token):
        while not self.stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            self.connections.append(token)
            conn.sendall(token.encode())
            conn.close()

    def close(self):
        self.stop.set()
        for server, thread in self.servers:
            thread.join()
            server.close()
        shutil.rmtree(SECRET_DIR, ignore_errors=True)
        for path in (TMP_SECRET, UNIX_SOCKET):
            if os.path.exists(path):
                os.unlink(path)


def _remove_drops():
    for d in DROP_DIRS:
        for name in (f"recode-attack-{TAG}-drop", f"recode-attack-{TAG}-dir"):
            path = os.path.join(d, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
    if os.path.exists(f"/dev/shm/recode-attack-{TAG}"):
        os.unlink(f"/dev/shm/recode-attack-{TAG}")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    """Every job of this file, run once."""
    work = tmp_path_factory.mktemp("attacks")
    spec = {"batch": [job(i, c, t) for i, c, t in ATTACKS] + [job(i, c, t) for i, c, t, _ in CONTROLS],
            "pairs": [(i, job(f"{i}:first", *first), job(f"{i}:then", *then)) for i, first, then, _ in PAIRS]}
    (work / "spec.json").write_text(json.dumps(spec))
    bait = HostBait()
    try:
        proc = in_throwaway_pid_namespace([sys.executable, THIS_FILE, "--run", str(work / "spec.json"),
                                           str(work / "out.json")], timeout=600)
        time.sleep(0.3)    # a connection still being served
        drops = {d: sorted(n for n in set(os.listdir(d)) - bait.before[d] if n.startswith(f"recode-attack-{TAG}"))
                 for d in bait.before}
    finally:
        bait.close()
        _remove_drops()
    assert proc.returncode == 0 and (work / "out.json").exists(), proc.stderr[-3000:]
    report = json.loads((work / "out.json").read_text())
    report["drops"], report["connections"], report["stderr"] = drops, bait.connections, proc.stderr[-3000:]
    return report


def describe(result):
    return json.dumps(result)[:600]


def assert_not_rewarded(result, kind):
    """An attack's verdict: the program's failure; for unittest a pass only when flagged as judged in-process."""
    assert result is not None, "no result: the batch lost this job (a worker died)"
    if kind == "unittest" and result["status"] == "passed":
        assert result.get("trust") == "in-process", f"unittest attack passed without trust=in-process: " \
                                                    f"{describe(result)}"
        return
    assert result["status"] in PROGRAM_FAILURES, f"attack got {result['status']!r}: {describe(result)}"


# ---- the tests -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attack_id,tests", [pytest.param(i, t, id=i) for i, _, t in ATTACKS if i not in DROP_IDS])
def test_attack_is_not_rewarded(outcome, attack_id, tests):
    assert_not_rewarded(outcome["batch"][attack_id], tests["type"])


@pytest.mark.parametrize("drop_id,directory", [pytest.param(i, d, id=i) for i, d in DROPS])
def test_attack_leaves_no_file_on_the_host(outcome, drop_id, directory):
    result = outcome["batch"][drop_id]
    assert result is not None and result["status"] != "harness_error", describe(result)
    assert outcome["drops"][directory] == [], f"left in {directory}: {outcome['drops'][directory]}"


@pytest.mark.parametrize("control_id,want", [pytest.param(i, w, id=i) for i, _, _, w in CONTROLS])
def test_control(outcome, control_id, want):
    result = outcome["batch"][control_id]
    assert result is not None, "no result: the batch lost this job (a worker died)"
    assert result["status"] == want, describe(result)


@pytest.mark.parametrize("pair_id,kinds,want", [pytest.param(i, (f[1]["type"], t[1]["type"]), w, id=i)
                                                for i, f, t, w in PAIRS])
def test_attack_then_next_job_on_the_same_worker(outcome, pair_id, kinds, want):
    first, then = outcome["pairs"][pair_id]
    assert first is not None and first["status"] != "harness_error", f"the attack itself: {describe(first)}"
    if pair_id.startswith("c7-"):
        assert_not_rewarded(first, kinds[0])
    assert then is not None, "no result for the job after the attack (a worker died)"
    if want == "passed":
        assert then["status"] == "passed", f"the job after the attack: {describe(then)}"
    else:
        assert_not_rewarded(then, kinds[1])


def test_no_job_of_the_batch_was_lost(outcome):
    """One job never takes others down with it: no lost result, no exception from run_jobs."""
    assert "batch_exception" not in outcome, outcome["batch_exception"]
    assert outcome["lost"] == [], f"lost with their worker: {outcome['lost']}"


def test_every_result_says_how_it_was_judged(outcome):
    """trust is "data" when the verdict was decided outside the process that ran program code, else "in-process";
    call and stdio verdicts are always data."""
    kinds = {i: t["type"] for i, _, t in ATTACKS} | {i: t["type"] for i, _, t, _ in CONTROLS}
    results = dict(outcome["batch"])
    for pair_id, first, then, _ in PAIRS:
        kinds[f"{pair_id}:first"], kinds[f"{pair_id}:then"] = first[1]["type"], then[1]["type"]
        results[f"{pair_id}:first"], results[f"{pair_id}:then"] = outcome["pairs"][pair_id]
    bad = {}
    for job_id, result in results.items():
        if result is None:
            continue
        trust = result.get("trust")
        if trust not in ("data", "in-process") or (kinds[job_id] in ("call", "stdio") and trust != "data"):
            bad[job_id] = trust
    assert not bad, bad


def test_no_secret_was_served_to_a_program(outcome):
    """The listening sockets count what they served: a program in the sandbox must not have reached them."""
    assert outcome["connections"] == [], outcome["connections"]


# ---- the jobs file read through the command line --------------------------------------------------------------------

JOBS_FILE_PROGRAM = src("""
    import glob, re
    found = 'nothing found'
    for path in glob.glob('/tmp/*/*.jsonl') + glob.glob('/tmp/*.jsonl') + glob.glob('/tmp/*/*/*.jsonl'):
        try:
            m = re.search('jobsfile-[0-9a-f]{12}', open(path).read())
        except (OSError, UnicodeDecodeError):
            continue
        if m:
            found = m.group(0)
            break
    print(found)
""")


def test_c5_program_cannot_read_the_jobs_file():
    """execute.py's command line with its jobs file in a world-readable directory: the program searches /tmp for it
    and prints the expected output it finds there."""
    work = f"/tmp/recode-attack-{TAG}-jobs"
    os.makedirs(work)
    try:
        os.chmod(work, 0o755)
        jobs, out = os.path.join(work, "jobs.jsonl"), os.path.join(work, "results.jsonl")
        with open(jobs, "w") as f:
            f.write(json.dumps(job("c5-read-jobs-file", JOBS_FILE_PROGRAM,
                                   {"type": "stdio", "cases": [{"input": "", "output": TOKENS["jobsfile"]}]})) + "\n")
        os.chmod(jobs, 0o644)
        proc = in_throwaway_pid_namespace([sys.executable, os.path.join(ROOT, "execute.py"), jobs, "--out", out,
                                           "--workers", "1", "--timeout", str(TIMEOUT)], timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with open(out) as f:
            result = json.loads(f.readline())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert_not_rewarded(result, "stdio")


# ---- nothing left in the host's temp dir by a run, a restarted pool or a crashed pool -------------------------------

def test_no_scratch_dir_is_left_in_the_host_temp_dir():
    """In a private /tmp (so other users of the machine do not count): after run_jobs, after the pool is restarted
    at another size, and after the process holding the pool is killed, no recode-exec-* entry is left in /tmp."""
    # a checkout or venv under /tmp is bound back into the private /tmp, at its own path
    keep = sorted({p for p in (ROOT, sys.prefix) if p.startswith("/tmp/")})
    rebind = "".join(f"mkdir -p {p} && mount --bind /mnt/{p[5:]} {p} && " for p in keep)
    script = (f"mount --bind /tmp /mnt && "
              f"mount -t tmpfs tmpfs /tmp && {rebind}{{ {sys.executable} {THIS_FILE} --leftovers; "
              f"{sys.executable} {THIS_FILE} --after-crash; }}")
    proc = in_throwaway_pid_namespace(["unshare", "--mount", "sh", "-c", script], timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
    listings = json.loads(proc.stdout.strip().splitlines()[-1])
    left = {stage: [n for n in names if n.startswith("recode-exec-")] for stage, names in listings.items()}
    assert left == {stage: [] for stage in left}, listings


def _leftovers():
    """(In the private /tmp.) Run, restart, then die with the pool still up; print what /tmp held at each stage."""
    listings = {"before": sorted(os.listdir("/tmp"))}
    tests = RIGHT["assert"]
    assert execute.run_jobs([job(0, *tests)], workers=2, timeout=TIMEOUT)[0]["status"] == "passed"
    listings["after run_jobs"] = sorted(os.listdir("/tmp"))
    execute.start_pool(1)       # closes the two-worker pool, starts a one-worker one
    assert execute.run_jobs([job(0, *tests)], workers=1, timeout=TIMEOUT)[0]["status"] == "passed"
    listings["after restarting the pool"] = sorted(os.listdir("/tmp"))
    with open("/tmp/.listings.json", "w") as f:
        json.dump(listings, f)
    os.kill(os.getpid(), signal.SIGKILL)    # a crash: the pool's owner dies without closing it


def _after_crash():
    with open("/tmp/.listings.json") as f:
        listings = json.load(f)
    os.unlink("/tmp/.listings.json")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:     # until the crashed pool's processes are gone
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]
        if not others:
            break
        time.sleep(0.1)
    listings["after the pool's owner was killed"] = sorted(os.listdir("/tmp"))
    print(json.dumps(listings))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        with open(sys.argv[2]) as f:
            result = run_batches(json.load(f))
        with open(sys.argv[3], "w") as f:
            json.dump(result, f)
    elif sys.argv[1:2] == ["--leftovers"]:
        _leftovers()
    elif sys.argv[1:2] == ["--after-crash"]:
        _after_crash()
