"""Meridian's integration-test harness: every tests/integration/test_*.py, the
benchmarks in tests/bench/ and the demo build on it.

What it gives a test file:
  - a tiny runner: @test registers a function, run_all() runs them in order,
    prints PASS/FAIL (with traceback and the log tails of the processes the
    test started), prints "N passed, M failed" and exits 1 on any failure.
    `python3 test_x.py NAME...` runs only the named tests.
  - resource cleanup: every process, PostgreSQL cluster, checker and temp dir
    is registered when created. Whatever a test created is stopped when the
    test ends (pass or fail); what was created outside a test (module level)
    is stopped at exit (atexit, SIGTERM/SIGINT/SIGHUP). A watchdog process,
    in its own session, SIGKILLs our processes and stops our clusters if this
    interpreter dies without cleaning up (e.g. ctest's timeout SIGKILL).
  - wait_until() bounded waits, free_port(), TempDir under MERIDIAN_TEST_TMP.
  - PgCluster: a throw-away PostgreSQL 15 (run as user postgres) with
    streaming replicas, replay pause, WAL receiver cut, promote, kill -9;
    on 127.0.0.1, or (host=, netns=) on an address inside a network
    namespace of netns.py, its server and tools run there.
  - Proc: a started program with its log file; stop/kill9/sigstop/sigcont.
  - Controller / Agent: write a JSON config and run meridian-controller /
    meridian-agent from MERIDIAN_BUILD_DIR (host=, netns= as for PgCluster).
  - http_json(): JSON over HTTP with a bearer token (urllib, no proxies).
  - LeaderChecker: samples the lease row and every controller's /v1/status
    in background threads and reports any moment where leadership was held
    twice (see its docstring for the exact rules).

Only Debian's /usr/bin/python3 with the standard library and python3-psycopg2.
Needs root (it runs PostgreSQL through `runuser -u postgres`).
Environment: MERIDIAN_TEST_TMP and MERIDIAN_BUILD_DIR are required (a test
FAILS without them); standalone tools (bench, demo) call setup_standalone().
"""

import atexit
import bisect
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - a clear message instead of a trace
    sys.stderr.write("meridian_harness needs Debian's python3-psycopg2: run it with "
                     "/usr/bin/python3 (apt-get install python3-psycopg2)\n")
    raise

PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
TAKEN_PORTS = {2024, 18081}  # on this machine kind, held by processes not ours

# API tokens every Controller is configured with (one per role).
OPERATOR_TOKEN = "meridian-test-operator-token-0123456789"
VIEWER_TOKEN = "meridian-test-viewer-token-0123456789"
AGENT_TOKEN = "meridian-test-agent-token-0123456789"
TOKENS = [
    {"name": "ops", "token": OPERATOR_TOKEN, "role": "operator"},
    {"name": "view", "token": VIEWER_TOKEN, "role": "viewer"},
    {"name": "agents", "token": AGENT_TOKEN, "role": "agent"},
]

_T0 = time.monotonic()


def log(msg):
    """Prints a harness line with seconds since start (stdout, flushed)."""
    print("[%7.2f] %s" % (time.monotonic() - _T0, msg), flush=True)


class HarnessError(Exception):
    """A harness operation failed (server did not start, command failed...)."""


class WaitTimeout(AssertionError):
    """wait_until() ran out of time: the awaited condition never held."""


class StopWaiting(HarnessError):
    """Raised by a wait_until() condition when waiting longer is pointless
    (the process exited): wait_until lets it through at once."""


# --------------------------------------------------------------------------
# environment


def require_env(name):
    """Returns the value of environment variable NAME; raises HarnessError
    (so the test FAILS, it does not skip) when it is missing or empty."""
    v = os.environ.get(name)
    if not v:
        raise HarnessError("environment variable %s is not set (run the test through "
                           "tests/run.sh or ctest, or set it by hand)" % name)
    return v


def source_dir():
    v = os.environ.get("MERIDIAN_SOURCE_DIR")
    if v:
        return v
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def build_dir():
    return require_env("MERIDIAN_BUILD_DIR")


def program_path(name):
    """Path of a built program (meridian-controller, meridian-agent,
    meridianctl) under MERIDIAN_BUILD_DIR; raises HarnessError if absent."""
    base = build_dir()
    for cand in (os.path.join(base, name), os.path.join(base, "controller", name),
                 os.path.join(base, "agent", name), os.path.join(base, "cli", name)):
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise HarnessError("program %s not found under %s (build first)" % (name, base))


def setup_standalone(build=None):
    """For tools run by hand (bench, demo): defaults MERIDIAN_SOURCE_DIR,
    MERIDIAN_BUILD_DIR (<source>/build) and MERIDIAN_TEST_TMP (a new mode-755
    dir under /tmp, removed at exit) when they are not set."""
    os.environ.setdefault("MERIDIAN_SOURCE_DIR", source_dir())
    os.environ.setdefault("MERIDIAN_BUILD_DIR", build or os.path.join(source_dir(), "build"))
    if not os.environ.get("MERIDIAN_TEST_TMP"):
        d = tempfile.mkdtemp(prefix="meridian-standalone.", dir="/tmp")
        os.chmod(d, 0o755)
        os.environ["MERIDIAN_TEST_TMP"] = d
        _state.owned_tmp_roots.append(d)


# --------------------------------------------------------------------------
# resources, cleanup, watchdog


class _State:
    def __init__(self):
        self.resources = []        # objects with _cleanup() -> list of problems
        self.session = []          # same, created by fixtures: cleaned at exit
        self.fixture_depth = 0
        self.lock = threading.RLock()
        self.failed = False
        self.cleaned = False
        self.watchdog = None
        self.state_file = None
        self.owned_tmp_roots = []
        self.current_procs = []    # Procs started since the current test began
        self.test_name = None      # the running test, if any
        self.test_tmp = None       # its default TempDir, once asked for
        self.session_tmp = None    # default TempDir outside tests


_state = _State()


def _register(obj):
    with _state.lock:
        if _state.fixture_depth:
            _state.session.append(obj)
        else:
            _state.resources.append(obj)
    if isinstance(obj, Proc):
        _state.current_procs.append(obj)
    _write_watchdog_state()


def _release_since(mark):
    """Cleans resources registered after position mark, newest first.
    Returns a list of problem strings (sanitizer reports, cleanup errors)."""
    problems = []
    while True:
        with _state.lock:
            if len(_state.resources) <= mark:
                break
            obj = _state.resources.pop()
        t0 = time.monotonic()
        try:
            found = obj._cleanup() or []
        except Exception as e:  # cleanup must go on
            found = ["cleanup of %r failed: %s" % (obj, e)]
        if time.monotonic() - t0 > 3:
            log("cleanup of %r took %.1f s" % (obj, time.monotonic() - t0))
        if found:
            _state.failed = True  # keeps temp dirs for the post-mortem
        problems.extend(found)
    _write_watchdog_state()
    return problems


def cleanup_all():
    """Stops every registered resource (idempotent). Called at exit."""
    if _state.cleaned:
        return []
    problems = _release_since(0)
    with _state.lock:
        _state.resources, _state.session = _state.session, []
    problems += _release_since(0)
    _state.cleaned = True
    if not _state.failed:
        for d in _state.owned_tmp_roots:
            shutil.rmtree(d, ignore_errors=True)
    if _state.state_file:
        try:
            os.unlink(_state.state_file)
        except OSError:
            pass
    return problems


def _on_signal(signum, _frame):
    _state.failed = True
    log("signal %d: cleaning up" % signum)
    raise SystemExit(128 + signum)


def install_signal_handlers():
    """SIGTERM/SIGINT/SIGHUP end the run through SystemExit so atexit cleanup
    runs. Only from the main thread."""
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)


atexit.register(cleanup_all)

_WATCHDOG = r"""
import json, os, subprocess, sys, time
parent, pstart, path, pgbin = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            f = f.read().rsplit(")", 1)[1].split()
        return f[0], f[19]
    except OSError:
        return None, None
def alive(pid, start):
    st, t = stat(pid)
    return st is not None and st != "Z" and t == start
while alive(parent, pstart):
    time.sleep(0.5)
try:
    with open(path) as f:
        state = json.load(f)
except (OSError, ValueError):
    sys.exit(0)
for p in state.get("procs", []):
    if alive(p["pid"], p["start"]):
        try:
            os.kill(p["pid"], 9)
        except OSError:
            pass
def thaw(d):
    # a server frozen by PgCluster.freeze() cannot stop: SIGCONT it and its children
    try:
        with open(os.path.join(d, "postmaster.pid")) as f:
            pm = int(f.readline())
    except (OSError, ValueError):
        return
    for q in os.listdir("/proc"):
        if not q.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % q) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if int(q) == pm or ppid == pm:
            try:
                os.kill(int(q), 18)
            except OSError:
                pass
for d in state.get("pg", []):
    thaw(d)
    subprocess.call(["runuser", "-u", "postgres", "--", pgbin + "/pg_ctl", "-D", d,
                     "-m", "immediate", "-w", "-t", "20", "stop"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for ns in state.get("netns", []):
    subprocess.call(["ip", "netns", "del", ns],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    os.unlink(path)
except OSError:
    pass
"""


def _proc_start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def _proc_state(pid):
    """Returns the /proc state letter of pid, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def pid_alive(pid):
    """True if pid exists and is not a zombie (PID 1 here reaps lazily)."""
    st = _proc_state(pid)
    return st is not None and st != "Z"


def _write_watchdog_state():
    tmp = os.environ.get("MERIDIAN_TEST_TMP")
    if not tmp or not os.path.isdir(tmp):
        return
    with _state.lock:
        procs, pgs, nets = [], [], []
        for r in _state.resources + _state.session:
            if isinstance(r, Proc) and r.popen is not None and r.popen.poll() is None:
                procs.append({"pid": r.popen.pid, "start": r.start_time})
            elif isinstance(r, PgCluster) and r.initialized:
                pgs.append(r.data)
            # network namespaces (tests/integration/netns.py): deleted last
            nets.extend(getattr(r, "watchdog_netns", None) or [])
        if _state.state_file is None:
            if not procs and not pgs and not nets:
                return
            _state.state_file = os.path.join(tmp, ".harness-%d.json" % os.getpid())
        tmpf = _state.state_file + ".new"
        with open(tmpf, "w") as f:
            json.dump({"procs": procs, "pg": pgs, "netns": nets}, f)
        os.replace(tmpf, _state.state_file)
        if _state.watchdog is None:
            _state.watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()),
                 _proc_start_time(os.getpid()) or "", _state.state_file, PGBIN],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)


# --------------------------------------------------------------------------
# runner

_tests = []


def fixture(fn):
    """Decorator for a shared resource: fn runs once, on first call, and its
    result is returned by every later call. What it creates (clusters,
    processes, dirs) lives until the end of the run instead of the end of
    the test that first asked for it."""
    cache = []

    def wrapper():
        if not cache:
            with _state.lock:
                _state.fixture_depth += 1
            try:
                cache.append(fn())
            finally:
                with _state.lock:
                    _state.fixture_depth -= 1
        return cache[0]
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def test(fn):
    """Decorator: registers fn as a test, run by run_all() in file order."""
    _tests.append(fn)
    return fn


def _tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def run_all():
    """Runs the registered tests in order (or those named on the command
    line), prints PASS/FAIL per test and "N passed, M failed", cleans up and
    exits: 0 if all passed, 1 otherwise (also when no test ran)."""
    install_signal_handlers()
    wanted = [a for a in sys.argv[1:] if not a.startswith("-")]
    unknown = [w for w in wanted if w not in {t.__name__ for t in _tests}]
    passed = failed = 0
    if unknown:
        print("unknown test(s): %s" % ", ".join(unknown), flush=True)
        failed += len(unknown)
    selected = [t for t in _tests if not wanted or t.__name__ in wanted]
    try:
        for fn in selected:
            name = fn.__name__
            log("=== %s" % name)
            with _state.lock:
                mark = len(_state.resources)
            _state.current_procs = []
            _state.test_name, _state.test_tmp = name, None
            t0 = time.monotonic()
            err = None
            try:
                fn()
            except Exception:
                err = traceback.format_exc()
                _state.failed = True
            procs = list(_state.current_procs)
            _state.test_name = None
            problems = _release_since(mark)
            dt = time.monotonic() - t0
            if err is None and not problems:
                passed += 1
                log("PASS %s (%.1f s)" % (name, dt))
                continue
            failed += 1
            _state.failed = True
            if err:
                print(err, end="", flush=True)
            for p in problems:
                print("problem: %s" % p, flush=True)
            _print_logs(procs)
            log("FAIL %s (%.1f s)" % (name, dt))
    except BaseException:
        failed += 1
        _state.failed = True
        traceback.print_exc()
        _print_logs(_state.current_procs)
        raise
    finally:
        problems = cleanup_all()
        for p in problems:
            print("problem at exit: %s" % p, flush=True)
        if problems:
            failed += 1
        if not selected and not unknown:
            print("no tests ran", flush=True)
            failed += 1
        print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


def _print_logs(procs):
    seen = set()
    with _state.lock:
        extra = [r for r in _state.resources + _state.session
                 if isinstance(r, (Proc, PgCluster))]
    for r in list(procs) + extra:
        path = getattr(r, "log_path", None)
        if not path or path in seen:
            continue
        seen.add(path)
        print("----- last lines of %s (%s)" % (r.name, path), flush=True)
        print(_tail(path, 40), flush=True)
    print("-----", flush=True)


# --------------------------------------------------------------------------
# small helpers


def wait_until(fn, timeout_s, interval_s=0.05, what=None):
    """Calls fn() every interval_s until it returns a truthy value, which it
    returns. Exceptions from fn count as "not yet" (the last one is shown),
    except StopWaiting, which ends the wait at once.
    Raises WaitTimeout naming `what`, the time waited, the last value and
    the last error when timeout_s passes."""
    what = what or getattr(fn, "__name__", "condition")
    deadline = time.monotonic() + timeout_s
    last_val, last_err, n = None, None, 0
    while True:
        n += 1
        try:
            last_val = fn()
            last_err = None
            if last_val:
                return last_val
        except StopWaiting:
            raise
        except Exception as e:
            last_err = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() >= deadline:
            raise WaitTimeout("timed out after %.1f s waiting for %s (%d tries; last value %r%s)"
                              % (timeout_s, what, n, last_val,
                                 "; last error " + last_err if last_err else ""))
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


_ports_given = set()
_ports_lock = threading.Lock()


# Ports handed out come from below the kernel's ephemeral range (32768-60999
# here): a port picked from inside it can be taken, before the server we
# start binds it, by the local end of any outgoing connection (libpq, curl).
FREE_PORT_RANGE = (15000, 32000)


def free_port():
    """Returns a TCP port on 127.0.0.1 that nothing listens on now, that this
    process has not handed out before, and that no outgoing connection will
    take as its local port (below the ephemeral range)."""
    import random
    with _ports_lock:
        for _ in range(500):
            port = random.randrange(*FREE_PORT_RANGE)
            if port in _ports_given or port in TAKEN_PORTS:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                s.close()
            _ports_given.add(port)
            return port
    raise HarnessError("no free port found")


_dead_sock = None


def dead_port():
    """A port bound (not listening) by this process for its lifetime:
    connections to it are refused at once and nobody else can take it."""
    global _dead_sock
    if _dead_sock is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        _dead_sock = s
    return _dead_sock.getsockname()[1]


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class TempDir:
    """A new directory under MERIDIAN_TEST_TMP (mode 755). Removed when its
    owner releases it, unless a test failed (kept for post-mortem, path
    printed) or MERIDIAN_KEEP_TMP is set."""

    def __init__(self, prefix="t", register=True):
        root = require_env("MERIDIAN_TEST_TMP")
        self.path = tempfile.mkdtemp(prefix=prefix + ".", dir=root)
        os.chmod(self.path, 0o755)
        self.name = os.path.basename(self.path)
        if register:
            _register(self)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def _cleanup(self):
        if _state.failed or os.environ.get("MERIDIAN_KEEP_TMP"):
            log("kept %s" % self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        return []

    def __repr__(self):
        return "TempDir(%s)" % self.path


def default_tmp():
    """The TempDir used by whatever is created without an explicit one:
    inside a test, one per test (named after it, released with the test's
    resources), so tests never share data dirs, logs or agent state;
    outside tests and inside fixtures, one for the whole run."""
    if _state.test_name is not None and not _state.fixture_depth:
        if _state.test_tmp is None:
            _state.test_tmp = TempDir(_state.test_name)
        return _state.test_tmp
    if _state.session_tmp is None:
        with _state.lock:
            _state.fixture_depth += 1      # registers it for the whole run
        try:
            _state.session_tmp = TempDir("session")
        finally:
            with _state.lock:
                _state.fixture_depth -= 1
    return _state.session_tmp


# --------------------------------------------------------------------------
# HTTP

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method, url, body=None, token=None, timeout=5.0, headers=None):
    """Sends a request (body: JSON-encoded if not None) with an optional
    bearer token. Returns (status, parsed JSON or None if the body is empty
    or not JSON). Raises OSError (URLError, timeouts) when no HTTP answer
    came at all."""
    data = None
    hdrs = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if token:
        hdrs["Authorization"] = "Bearer " + token
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except http.client.HTTPException as e:  # bad status line, incomplete read
        raise ConnectionError("%s %s: %s: %s" % (method, url, type(e).__name__, e))
    try:
        return status, (json.loads(raw) if raw else None)
    except ValueError:
        return status, None


def http_get(url, token=None, timeout=5.0):
    return http_json("GET", url, None, token, timeout)


def http_post(url, body=None, token=None, timeout=5.0):
    return http_json("POST", url, body if body is not None else {}, token, timeout)


# --------------------------------------------------------------------------
# processes

SANITIZER_PATTERNS = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                                r"runtime error:|WARNING: ThreadSanitizer")


class Proc:
    """A program we started, with stdout+stderr appended to log_path.
    Registered for cleanup. The same Proc can be started again after it
    stopped (the log gets a marker line)."""

    def __init__(self, name, argv, env=None, tmp=None, cwd=None, log_path=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = dict(env or {})
        self.tmp = tmp or default_tmp()
        self.cwd = cwd
        self.log_path = log_path or self.tmp.join(name + ".log")
        self.popen = None
        self.start_time = None
        self.starts = 0
        self.log_offset = 0     # where the current run's output begins
        _register(self)

    def start(self):
        if self.alive():
            raise HarnessError("%s is already running (pid %d)" % (self.name, self.pid))
        self.starts += 1
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as f:
            self.log_offset = f.tell()
            f.write(("=== start #%d: %s\n" % (self.starts, " ".join(self.argv))).encode())
            f.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f,
                                          stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                          start_new_session=True)
        self.start_time = _proc_start_time(self.popen.pid)
        _write_watchdog_state()
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def returncode(self):
        return self.popen.poll() if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.popen.pid, sig)

    def sigstop(self):
        self.signal(signal.SIGSTOP)

    def sigcont(self):
        self.signal(signal.SIGCONT)

    def kill9(self):
        """SIGKILLs the process and reaps it. Returns the exit status."""
        if not self.alive():
            return self.returncode
        os.kill(self.popen.pid, signal.SIGKILL)
        rc = self.popen.wait(10)
        _write_watchdog_state()
        return rc

    def stop(self, timeout_s=10.0):
        """SIGTERM (preceded by SIGCONT if it is stopped), then, after
        timeout_s, its stacks to the log and SIGKILL. Returns the exit status
        (negative: killed by that signal)."""
        if not self.alive():
            return self.returncode
        try:
            # SIGCONT only to a stopped process, and before SIGTERM: a SIGCONT
            # that lands during LeakSanitizer's exit-time stop-the-world
            # (ptrace) can hang the sanitizer build.
            if _proc_state(self.popen.pid) == "T":
                os.kill(self.popen.pid, signal.SIGCONT)
            os.kill(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log("%s did not stop within %.0f s of SIGTERM: stacks to its log, then SIGKILL"
                % (self.name, timeout_s))
            self.dump_stacks()
            os.kill(self.popen.pid, signal.SIGKILL)
            rc = self.popen.wait(10)
        _write_watchdog_state()
        return rc

    def dump_stacks(self, timeout_s=60):
        """Appends every thread's backtrace (gdb, when installed) to the log:
        what a process that hangs was doing."""
        gdb = shutil.which("gdb")
        if not gdb or not self.alive():
            return
        try:
            out = subprocess.run([gdb, "-p", str(self.popen.pid), "-batch", "-nx",
                                  "-ex", "thread apply all bt"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=timeout_s).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            out = "gdb failed: %s" % e
        # gdb cannot attach to a process that is already traced (e.g. by
        # LeakSanitizer's exit check): the kernel's view of each thread
        pid = self.popen.pid
        try:
            with open("/proc/%d/status" % pid) as f:
                out += "".join(ln for ln in f if ln.startswith(("State", "TracerPid")))
            for tid in sorted(os.listdir("/proc/%d/task" % pid), key=int):
                with open("/proc/%d/task/%s/wchan" % (pid, tid)) as f:
                    wchan = f.read()
                out += "task %s state %s wchan %s\n" % (tid, _proc_state(int(tid)), wchan)
        except OSError:
            pass
        with open(self.log_path, "a") as f:
            f.write("=== harness: stacks of pid %d (gdb)\n%s\n" % (self.popen.pid, out))

    def wait(self, timeout_s):
        """Waits for the process to exit by itself; returns its status or
        raises WaitTimeout."""
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise WaitTimeout("%s still running after %.1f s" % (self.name, timeout_s))

    def log_text(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return _tail(self.log_path, n)

    def sanitizer_reports(self):
        """Lines of the log that are sanitizer reports, if any."""
        text = self.log_text()
        return [ln for ln in text.splitlines() if SANITIZER_PATTERNS.search(ln)]

    def _cleanup(self):
        problems = []
        if self.alive():
            rc = self.stop()
            if rc not in (0, None, -signal.SIGTERM):
                problems.append("%s exited with status %s after SIGTERM" % (self.name, rc))
        reports = self.sanitizer_reports()
        if reports:
            problems.append("%s: sanitizer report in %s: %s" % (self.name, self.log_path,
                                                                 reports[0]))
        return problems

    def __repr__(self):
        return "Proc(%s, pid %s)" % (self.name, self.pid)


def run(argv, timeout_s=60, check=True, input=None, env=None):
    """Runs a command to completion; returns CompletedProcess (text output,
    stderr merged). Raises HarnessError on non-zero exit when check."""
    e = None
    if env:
        e = dict(os.environ)
        e.update(env)
    try:
        cp = subprocess.run([str(a) for a in argv], input=input, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=timeout_s, env=e)
    except subprocess.TimeoutExpired as ex:
        raise HarnessError("%s: no exit within %s s; output: %s" % (argv[0], timeout_s, ex.output))
    if check and cp.returncode != 0:
        raise HarnessError("%s exited with %d:\n%s" % (" ".join(map(str, argv)), cp.returncode,
                                                       cp.stdout))
    return cp


# --------------------------------------------------------------------------
# PostgreSQL


def lsn_to_int(lsn):
    """'16/B374D848' -> int; None stays None."""
    if lsn is None:
        return None
    hi, lo = str(lsn).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _as_postgres(*argv):
    return ["runuser", "-u", "postgres", "--"] + [str(a) for a in argv]


COMMON_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_keep_size": "'256MB'",
    "wal_log_hints": "on",          # pg_rewind can rejoin an old primary
    "fsync": "off",                 # throw-away data: speed over durability
    "synchronous_commit": "on",
    "shared_buffers": "'16MB'",
    "max_connections": "100",
    "wal_receiver_status_interval": "'1s'",
    "wal_retrieve_retry_interval": "'500ms'",
    "wal_sender_timeout": "'10s'",
    "wal_receiver_timeout": "'10s'",
    "log_line_prefix": "'%m [%p] %q%a '",
    "log_min_messages": "warning",
}


class PgCluster:
    """A throw-away PostgreSQL 15 cluster run as user postgres.

    Layout: <tmp>/<name>/ (owned by postgres) holds data/ (PGDATA), the
    server log and the unix socket; <name>/instance.conf holds the settings
    that differ per instance (port, socket dir, cluster_name,
    primary_conninfo) and is included from postgresql.conf by a relative
    path, so base backups and pg_rewind copies keep each instance's own.
    Create with PgCluster.create(name) (initdb + start) or
    primary.make_replica(name). Registered for cleanup (stop -m immediate).
    """

    def __init__(self, name="pg", tmp=None, port=None, settings=None, host="127.0.0.1",
                 netns=None):
        self.name = name
        # where it listens, and the network namespace its server and tools
        # run in (a netns.Network and a name in it; None: this namespace)
        self.host = host
        self.netns = netns
        self.tmp = tmp or default_tmp()
        self.dir = self.tmp.join(name)
        n = 1
        while os.path.exists(self.dir):    # a cluster of that name existed here
            n += 1
            self.dir = self.tmp.join("%s.%d" % (name, n))
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.primary = None          # PgCluster we replicate from, if a replica
        self.initialized = False
        self.saved_conninfo = None   # primary_conninfo while the WAL receiver is cut
        os.makedirs(self.dir, exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o755)
        _register(self)

    # -- creation

    @classmethod
    def create(cls, name="pg", tmp=None, settings=None, start=True, host="127.0.0.1",
               netns=None):
        """initdb + configuration (+ start). Returns the cluster. host and
        netns=(network, name): listen on host inside that namespace
        (tests/integration/netns.py)."""
        c = cls(name, tmp, settings=settings, host=host, netns=netns)
        c.init()
        if start:
            c.start()
        return c

    def init(self):
        run(self._cmd(PGBIN + "/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                         "--no-sync", "-E", "UTF8", "--locale=C"), timeout_s=120)
        self.initialized = True
        settings = dict(COMMON_SETTINGS)
        settings.update(self.settings)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# meridian test harness\n")
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))
            f.write("include_if_exists = '../instance.conf'\n")
        nets = ["127.0.0.1/32"]
        if self.host != "127.0.0.1":   # the test's own namespaces' /24
            nets.append(".".join(self.host.split(".")[:3]) + ".0/24")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("# meridian test harness: trust on loopback (and the test's own "
                    "namespaces) only\nlocal all all trust\nlocal replication all trust\n")
            for n in nets:
                f.write("host all all %s trust\nhost replication all %s trust\n" % (n, n))
        self._write_instance_conf()
        _write_watchdog_state()

    def _write_instance_conf(self):
        lines = ["port = %d" % self.port,
                 "listen_addresses = '%s'" % self.host,
                 "unix_socket_directories = '%s'" % self.dir,
                 "cluster_name = '%s'" % self.name]
        if self.primary is not None:
            lines.append("primary_conninfo = '%s'" % self.replication_conninfo(self.primary))
        path = os.path.join(self.dir, "instance.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        shutil.chown(path, "postgres", "postgres")

    def replication_conninfo(self, primary, port=None):
        host = primary.host if port is None else "127.0.0.1"
        return ("host=%s port=%d user=postgres application_name=%s"
                % (host, port or primary.port, self.name))

    def make_replica(self, name, start=True, tmp=None, host=None, netns=None):
        """A streaming replica of this cluster: pg_basebackup -R -X stream
        -c fast into a new cluster on a free port, application_name = name.
        host/netns as for create() (default: this cluster's host, no
        namespace). Returns it (started unless start=False)."""
        r = PgCluster(name, tmp or self.tmp, host=host or self.host, netns=netns)
        r.primary = self
        run(r._cmd(PGBIN + "/pg_basebackup", "-h", self.host, "-p", self.port,
                         "-U", "postgres", "-D", r.data, "-R", "-X", "stream", "-c", "fast",
                         "--no-sync"), timeout_s=180)
        r.initialized = True
        # -R wrote primary_conninfo to postgresql.auto.conf, which would win
        # over instance.conf: drop it, instance.conf has ours.
        auto = os.path.join(r.data, "postgresql.auto.conf")
        with open(auto) as f:
            kept = [ln for ln in f if not ln.startswith("primary_conninfo")]
        with open(auto, "w") as f:
            f.writelines(kept)
        r._write_instance_conf()
        _write_watchdog_state()
        if start:
            r.start()
        return r

    # -- life cycle

    def _cmd(self, *argv):
        """argv as user postgres, inside this cluster's namespace if any."""
        cmd = _as_postgres(*argv)
        if self.netns is not None:
            net, where = self.netns
            cmd = net.argv(where, cmd)
        return cmd

    def postmaster_pid(self):
        """PID from postmaster.pid if that process is alive and is a
        postgres of this data dir; else None."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            return None
        if self.data.encode() not in cmd:
            return None
        return pid

    def running(self):
        return self.postmaster_pid() is not None

    def start(self, timeout_s=60):
        """pg_ctl start -w. A postmaster.pid left by kill9 is removed first
        (its process is dead; PID 1 may not have reaped it yet)."""
        if self.postmaster_pid() is None:
            # the lock files name a dead (maybe unreaped) postmaster of ours
            for f in (os.path.join(self.data, "postmaster.pid"),
                      os.path.join(self.dir, ".s.PGSQL.%d.lock" % self.port)):
                if os.path.exists(f):
                    os.unlink(f)
        cp = run(self._cmd(PGBIN + "/pg_ctl", "-D", self.data, "-l", self.log_path, "-w",
                              "-t", int(timeout_s), "start"), timeout_s=timeout_s + 10,
                 check=False)
        if cp.returncode != 0:
            raise HarnessError("postgres %s did not start (%s):\n%s" %
                               (self.name, cp.stdout.strip(), _tail(self.log_path, 30)))
        return self

    def stop(self, mode="fast", timeout_s=60):
        """pg_ctl stop -m mode (smart|fast|immediate) -w. No-op if down."""
        if not self.running():
            return
        cp = run(self._cmd(PGBIN + "/pg_ctl", "-D", self.data, "-m", mode, "-w",
                              "-t", int(timeout_s), "stop"), timeout_s=timeout_s + 10,
                 check=False)
        if cp.returncode != 0 and self.running():
            raise HarnessError("postgres %s did not stop: %s" % (self.name, cp.stdout))

    def restart(self, mode="fast"):
        self.stop(mode)
        self.start()

    def kill9(self, children=True, timeout_s=10):
        """SIGKILLs the postmaster (only ours: PID from postmaster.pid, checked
        against its command line) and, if children, every backend of it (a
        whole-node crash). Waits until they are gone."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        kids = _children_of(pid) if children else []
        for p in [pid] + kids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not any(pid_alive(p) for p in [pid] + kids), timeout_s,
                   what="postgres %s processes to die" % self.name)
        if not children:
            # orphaned backends exit on postmaster death; wait for that too
            wait_until(lambda: not any(pid_alive(p) for p in kids), timeout_s,
                       what="postgres %s backends to exit" % self.name)

    def promote(self, timeout_s=60):
        """pg_promote(wait => true); returns when out of recovery."""
        ok = self.sql("SELECT pg_promote(true, %s)", (int(timeout_s),))[0][0]
        if not ok:
            raise HarnessError("pg_promote on %s returned false" % self.name)
        self.primary = None
        wait_until(lambda: not self.is_in_recovery(), timeout_s, what="%s to leave recovery"
                   % self.name)

    def freeze(self):
        """SIGSTOPs the postmaster, then every backend and auxiliary process
        of it: a hung server (I/O stall, stuck checkpoint, paused VM). The
        kernel still completes TCP handshakes on its port. Only ours: the
        PID from postmaster.pid, checked against its command line. Returns
        the PIDs stopped; thaw() resumes them (cleanup does too)."""
        pid = self.postmaster_pid()
        if pid is None:
            raise HarnessError("postgres %s is not running: nothing to freeze" % self.name)
        self._frozen = getattr(self, "_frozen", [])
        os.kill(pid, signal.SIGSTOP)
        self._frozen.append(pid)
        for _ in range(5):  # a child forked just before the postmaster stopped
            new = [k for k in _children_of(pid) if k not in self._frozen]
            if not new:
                break
            for k in new:
                try:
                    os.kill(k, signal.SIGSTOP)
                    self._frozen.append(k)
                except ProcessLookupError:
                    pass
        return list(self._frozen)

    def thaw(self):
        """SIGCONTs what freeze() stopped, postmaster last."""
        pids, self._frozen = getattr(self, "_frozen", []), []
        for p in reversed(pids):
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.initialized = False

    def _cleanup(self):
        self.thaw()  # a frozen server cannot stop
        try:
            if self.running():
                self.stop("immediate", timeout_s=30)
        except HarnessError as e:
            pid = self.postmaster_pid()
            if pid:
                self.kill9()
            return ["postgres %s: %s" % (self.name, e)]
        return []

    # -- SQL

    def conninfo(self, dbname="postgres", **extra):
        """libpq conninfo string for this cluster (TCP to its host)."""
        s = "host=%s port=%d user=postgres dbname=%s" % (self.host, self.port, dbname)
        for k, v in extra.items():
            s += " %s=%s" % (k, v)
        return s

    def connect(self, dbname="postgres", timeout_s=5):
        """A new psycopg2 connection in autocommit mode (caller closes)."""
        c = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname=dbname,
                             connect_timeout=max(1, int(timeout_s)),
                             application_name="meridian-harness")
        c.autocommit = True
        return c

    def sql(self, query, params=None, dbname="postgres"):
        """Runs one statement in autocommit. Returns the rows (list of
        tuples) for a query that returns rows, else the row count."""
        c = self.connect(dbname)
        try:
            with c.cursor() as cur:
                cur.execute(query, params)
                if cur.description is not None:
                    return cur.fetchall()
                return cur.rowcount
        finally:
            c.close()

    def sql_value(self, query, params=None, dbname="postgres"):
        rows = self.sql(query, params, dbname)
        return rows[0][0] if rows else None

    def create_database(self, name):
        """CREATE DATABASE name (dropped first if it exists). Returns its
        conninfo."""
        if not re.match(r"^[a-z_][a-z0-9_]*$", name):
            raise HarnessError("bad database name %r" % name)
        self.sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        self.sql("CREATE DATABASE %s" % name)
        return self.conninfo(name)

    def is_in_recovery(self):
        return bool(self.sql_value("SELECT pg_is_in_recovery()"))

    def current_lsn(self):
        """pg_current_wal_lsn() as int (primary only)."""
        return lsn_to_int(self.sql_value("SELECT pg_current_wal_lsn()"))

    def receive_lsn(self):
        return lsn_to_int(self.sql_value("SELECT pg_last_wal_receive_lsn()"))

    def replay_lsn(self):
        return lsn_to_int(self.sql_value("SELECT pg_last_wal_replay_lsn()"))

    def wait_replayed(self, lsn, timeout_s=30):
        """Waits until this replica replayed up to lsn (int)."""
        wait_until(lambda: (self.replay_lsn() or 0) >= lsn, timeout_s,
                   what="%s to replay up to %x" % (self.name, lsn))

    def pause_replay(self, timeout_s=10):
        """pg_wal_replay_pause() and wait until paused. Note: promoting ends
        the pause and replays what was received; to lose writes, use
        stop_wal_receiver()."""
        self.sql("SELECT pg_wal_replay_pause()")
        wait_until(lambda: self.sql_value("SELECT pg_get_wal_replay_pause_state()") == "paused",
                   timeout_s, what="%s replay to pause" % self.name)

    def resume_replay(self):
        self.sql("SELECT pg_wal_replay_resume()")

    def wal_receiver_status(self):
        """pg_stat_wal_receiver.status, or None when no WAL receiver runs."""
        return self.sql_value("SELECT status FROM pg_stat_wal_receiver")

    def stop_wal_receiver(self, timeout_s=15):
        """Cuts this replica off its primary's WAL stream without stopping
        it: primary_conninfo is pointed (ALTER SYSTEM + reload) at a port
        that refuses connections, the running WAL receiver restarts and
        cannot connect. Whatever the primary writes from now on does not
        reach this replica, even when promoted. resume_wal_receiver() undoes
        it."""
        if self.saved_conninfo is None:
            self.saved_conninfo = self.sql_value("SHOW primary_conninfo")
        dead = self.replication_conninfo(self.primary or self, port=dead_port())
        self.sql("ALTER SYSTEM SET primary_conninfo = %s", (dead,))
        self.sql("SELECT pg_reload_conf()")
        wait_until(lambda: self.wal_receiver_status() is None, timeout_s,
                   what="%s WAL receiver to stop" % self.name)

    def resume_wal_receiver(self, timeout_s=30):
        """Undoes stop_wal_receiver() and waits until streaming again."""
        self.sql("ALTER SYSTEM RESET primary_conninfo")
        self.sql("SELECT pg_reload_conf()")
        self.saved_conninfo = None
        wait_until(lambda: self.wal_receiver_status() == "streaming", timeout_s,
                   what="%s WAL receiver to stream again" % self.name)

    def replication_state(self):
        """Rows of pg_stat_replication on this (primary) cluster:
        list of dicts application_name, state, sent/replay lsn (ints)."""
        rows = self.sql("SELECT application_name, state, sent_lsn, replay_lsn "
                        "FROM pg_stat_replication ORDER BY application_name")
        return [{"application_name": r[0], "state": r[1], "sent_lsn": lsn_to_int(r[2]),
                 "replay_lsn": lsn_to_int(r[3])} for r in rows]

    def __repr__(self):
        return "PgCluster(%s, port %d)" % (self.name, self.port)


def make_replica(primary, name, start=True):
    """Same as primary.make_replica(name)."""
    return primary.make_replica(name, start=start)


def _children_of(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(d))
    return kids


# --------------------------------------------------------------------------
# Meridian programs


class _ConfiguredProgram:
    """A Meridian program run as `PROGRAM --config FILE` with a JSON config
    written by this wrapper. Subclasses give the program and base config."""

    program = None

    def __init__(self, name, config, tmp=None, env=None, netns=None):
        self.name = name
        self.tmp = tmp or default_tmp()
        self.config_path = self.tmp.join(name + ".json")
        self.cfg = dict(config)
        self.env = dict(env or {})
        self.netns = netns          # (netns.Network, name) or None
        argv = [program_path(self.program), "--config", self.config_path]
        if netns is not None:
            argv = netns[0].argv(netns[1], argv)
        self.proc = Proc(name, argv, env=self.env, tmp=self.tmp)
        self.write_config()

    def write_config(self, **changes):
        """Applies changes to the config dict and rewrites the file (takes
        effect at the next start)."""
        self.cfg.update(changes)
        with open(self.config_path, "w") as f:
            json.dump(self.cfg, f, indent=2)
            f.write("\n")
        os.chmod(self.config_path, 0o644)

    @property
    def log_path(self):
        return self.proc.log_path

    def start(self):
        self.proc.start()
        return self

    def stop(self, timeout_s=10.0):
        return self.proc.stop(timeout_s)

    def kill9(self):
        return self.proc.kill9()

    def sigstop(self):
        self.proc.sigstop()

    def sigcont(self):
        self.proc.sigcont()

    def alive(self):
        return self.proc.alive()

    def log_tail(self, n=40):
        return self.proc.log_tail(n)


class Controller(_ConfiguredProgram):
    """meridian-controller with its JSON config:
    {name, region, listen, advertise_url, store, lease_ttl_ms, log_level,
     tokens} plus `extra` keys (the controller rejects unknown keys, so only
    pass keys it knows)."""

    program = "meridian-controller"

    def __init__(self, name, region, store, tmp=None, lease_ttl_ms=2000, port=None,
                 log_level="info", extra=None, env=None, host="127.0.0.1", netns=None):
        self.port = port or free_port()
        self.host = host
        self.url = "http://%s:%d" % (host, self.port)
        self.region = region
        self.store = store
        cfg = {"name": name, "region": region, "listen": "%s:%d" % (host, self.port),
               "advertise_url": self.url, "store": store, "lease_ttl_ms": lease_ttl_ms,
               "log_level": log_level, "tokens": TOKENS}
        cfg.update(extra or {})
        super().__init__(name, cfg, tmp, env, netns)

    @property
    def lease_ttl_ms(self):
        return self.cfg["lease_ttl_ms"]

    def migrate(self, check=True, timeout_s=120):
        """`meridian-controller migrate --config FILE`. Returns the
        CompletedProcess; raises HarnessError on failure when check."""
        argv = [program_path(self.program), "migrate", "--config", self.config_path]
        if self.netns is not None:
            argv = self.netns[0].argv(self.netns[1], argv)
        return run(argv, timeout_s=timeout_s, check=check, env=self.env)

    def get(self, path, token=VIEWER_TOKEN, timeout=5.0):
        return http_json("GET", self.url + path, None, token, timeout)

    def post(self, path, body=None, token=OPERATOR_TOKEN, timeout=5.0):
        return http_json("POST", self.url + path, body if body is not None else {}, token,
                         timeout)

    def status(self, timeout=5.0):
        """GET /v1/status as viewer; returns the JSON, raises HarnessError
        on a non-200 answer."""
        code, body = self.get("/v1/status", timeout=timeout)
        if code != 200:
            raise HarnessError("%s /v1/status: %s %s" % (self.name, code, body))
        return body

    def healthy(self):
        try:
            return self.get("/v1/health", token=None, timeout=1.0)[0] == 200
        except OSError:
            return False

    def ready_code(self, timeout=2.0):
        """HTTP status of GET /v1/ready, or None when no answer."""
        try:
            return self.get("/v1/ready", token=None, timeout=timeout)[0]
        except OSError:
            return None

    def is_leader(self):
        try:
            return bool(self.status(timeout=1.0)["controller"]["is_leader"])
        except (OSError, HarnessError, KeyError, TypeError):
            return False

    def start(self, wait_healthy=True, timeout_s=20):
        super().start()
        if wait_healthy:
            wait_until(lambda: self._healthy_or_dead(), timeout_s,
                       what="%s /v1/health" % self.name)
        return self

    def _healthy_or_dead(self):
        if not self.proc.alive():
            raise StopWaiting("%s exited with %s during start:\n%s" %
                               (self.name, self.proc.returncode, self.proc.log_tail(20)))
        return self.healthy()

    def __repr__(self):
        return "Controller(%s, %s)" % (self.name, self.url)


class Agent(_ConfiguredProgram):
    """meridian-agent with a JSON config (format of agent/agent_config.c):
    {node, region, controllers: [url...], token, state_dir, listen,
     log_level} plus `extra` keys (members, checks, probes, peers,
    heartbeat_ms, ...). controllers: one URL or a list. state_dir is a new
    directory in tmp (it survives restarts of the agent: the epoch file)."""

    program = "meridian-agent"

    def __init__(self, name, region, controllers, tmp=None, log_level="info", extra=None,
                 env=None, port=None, host="127.0.0.1", netns=None):
        tmp = tmp or default_tmp()
        self.port = port or free_port()
        self.host = host
        self.url = "http://%s:%d" % (host, self.port)
        self.region = region
        self.state_dir = tmp.join(name + ".state")
        os.makedirs(self.state_dir, exist_ok=True)
        if isinstance(controllers, str):
            controllers = [controllers]
        cfg = {"node": name, "region": region, "controllers": list(controllers),
               "token": AGENT_TOKEN, "state_dir": self.state_dir,
               "listen": "%s:%d" % (host, self.port), "log_level": log_level}
        cfg.update(extra or {})
        super().__init__(name, cfg, tmp, env, netns)

    def __repr__(self):
        return "Agent(%s, %s)" % (self.name, self.url)


def agreed_leader(controllers):
    """Asks every live controller for /v1/status. Returns (controller, term)
    when exactly one claims leadership and every answering controller names
    it (leader.name) with the same term; None otherwise."""
    claims, views = [], []
    for c in controllers:
        if not c.alive():
            continue
        try:
            st = c.status(timeout=2.0)
        except (OSError, HarnessError):
            return None
        me = st.get("controller") or {}
        if me.get("is_leader"):
            claims.append((c, me.get("term")))
        ld = st.get("leader") or {}
        views.append((ld.get("name"), ld.get("term")))
    if len(claims) != 1:
        return None
    leader, term = claims[0]
    if any(v != (leader.name, term) for v in views):
        return None
    return leader, term


def wait_for_leader(controllers, timeout_s, min_term=None, exclude=None):
    """Waits until agreed_leader() names a leader (with term > min_term and
    not `exclude`, if given). Returns (controller, term)."""
    def check():
        r = agreed_leader(controllers)
        if r is None:
            return None
        if min_term is not None and r[1] <= min_term:
            return None
        if exclude is not None and r[0] is exclude:
            return None
        return r
    return wait_until(check, timeout_s, interval_s=0.02, what="one agreed leader" +
                      (" with term > %s" % min_term if min_term is not None else ""))


# --------------------------------------------------------------------------
# leader checker


class LeaderChecker:
    """Watches leadership while a test runs and reports any moment where it
    was held twice.

    Threads sample every interval_s (~50 ms): one reads the lease row
    (SELECT holder, term, expires_at, now() FROM meridian.lease) from the
    store, one per controller reads GET /v1/status. Each sample keeps the
    monotonic window [sent, answered] in which the answer was true.

    A correct controller claims leadership (is_leader = true) only while it
    believes its lease valid, and steps down before the lease can expire in
    the store, so another controller can win a new term only after a gap of
    at least the step-down safety margin. Provable violations, all reported:
      R1  one term claimed by two controllers (at any times);
      R2  a claim of term t whose window starts after (tolerance_s) the end
          of any claim window with a higher term (a stale leader);
      R3  two controllers claiming leadership within grace_s of each other
          (the union of both windows shorter than grace_s): "the same
          instant"; grace_s must stay below the controllers' safety margin;
      R4  two controllers' leadership intervals (consecutive claims of one
          term, from the end of the first window to the start of the last)
          overlap by more than tolerance_s;
      S1  the store's term went down, or one term showed two holders;
      S2  a controller claimed a term that the store showed held by another;
      S3  a claim of term t whose window starts after (tolerance_s) a store
          sample showed a higher term.
    The holder column is matched against the controller's name or URL.
    """

    FOLLOWER = "follower"
    DOWN = "down"

    def __init__(self, store_conninfo, controllers=(), interval_s=0.05, tolerance_s=0.01,
                 grace_s=0.1, lease_query=None):
        self.store_conninfo = store_conninfo
        self.interval_s = interval_s
        self.tolerance_s = tolerance_s
        self.grace_s = grace_s
        self.lease_query = lease_query or \
            "SELECT holder, term, expires_at, now() FROM meridian.lease"
        self.t0 = time.monotonic()
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.obs = []          # (name, t_sent, t_answered, term|FOLLOWER|DOWN)
        self.claims = []       # (name, t_sent, t_answered, term): is_leader true
        self.samples = {}      # name -> [answered, not answered, claims]
        self.lease = []        # (t_sent, t_answered, holder, term, remaining_s)
        self.store_errors = 0
        self.bad = []          # malformed answers
        self.threads = []
        self.watched = {}
        self.checked = False
        self.stopped = False
        self.name = "leader-checker"
        self._start_thread(self._store_loop, "store")
        for c in controllers:
            self.watch(c)
        _register(self)

    def watch(self, controller):
        """Starts sampling controller (idempotent per name)."""
        with self.lock:
            if controller.name in self.watched:
                return
            self.watched[controller.name] = controller
            self.samples[controller.name] = [0, 0, 0]
        self._start_thread(lambda: self._ctl_loop(controller), controller.name)

    def _start_thread(self, fn, name):
        t = threading.Thread(target=fn, name="checker-" + name, daemon=True)
        t.start()
        self.threads.append(t)

    def _store_loop(self):
        conn = None
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self.store_conninfo, connect_timeout=1,
                                            options="-c statement_timeout=1000",
                                            application_name="meridian-leader-checker")
                    conn.autocommit = True
                t1 = time.monotonic()
                with conn.cursor() as cur:
                    cur.execute(self.lease_query)
                    rows = cur.fetchall()
                t2 = time.monotonic()
                with self.lock:
                    for holder, term, expires_at, now in rows:
                        rem = (expires_at - now).total_seconds() if expires_at and now else None
                        self.lease.append((t1, t2, holder, term, rem))
            except Exception:
                self.store_errors += 1
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
            self.stop_ev.wait(self.interval_s)
        if conn is not None:
            conn.close()

    def _ctl_loop(self, c):
        url = c.url + "/v1/status"
        while not self.stop_ev.is_set():
            t1 = time.monotonic()
            try:
                code, body = http_json("GET", url, None, VIEWER_TOKEN, timeout=1.0)
            except Exception:
                code, body = None, None
            t2 = time.monotonic()
            with self.lock:
                s = self.samples[c.name]
                if code == 200 and isinstance(body, dict):
                    s[0] += 1
                    me = body.get("controller") or {}
                    if me.get("is_leader") is True:
                        s[2] += 1
                        term = me.get("term")
                        if not isinstance(term, int):
                            self.bad.append("%s claimed leadership with term %r at %.3f s"
                                            % (c.name, term, t1 - self.t0))
                            term = -1
                        self.claims.append((c.name, t1, t2, term))
                        self.obs.append((c.name, t1, t2, term))
                    else:
                        self.obs.append((c.name, t1, t2, self.FOLLOWER))
                else:
                    s[1] += 1
                    self.obs.append((c.name, t1, t2, self.DOWN))
            self.stop_ev.wait(self.interval_s)

    def stop(self):
        """Stops sampling (idempotent)."""
        if self.stopped:
            return
        self.stop_ev.set()
        for t in self.threads:
            t.join(5)
        self.stopped = True

    # -- analysis

    def intervals(self):
        """name -> [(start, end, term)], seconds since the checker started:
        runs of consecutive claims of one term (outer bounds of windows)."""
        out = {}
        with self.lock:
            obs = sorted(self.obs, key=lambda x: x[1])
        cur = {}
        for name, t1, t2, term in obs:
            run_ = cur.get(name)
            if not isinstance(term, int):
                if run_:
                    out.setdefault(name, []).append(run_)
                    cur[name] = None
                continue
            if run_ and run_[2] == term:
                run_[1] = t2
                run_[4] = t1
            else:
                if run_:
                    out.setdefault(name, []).append(run_)
                cur[name] = [t1, t2, term, t2, t1]  # start, end, term, first end, last start
        for name, run_ in cur.items():
            if run_:
                out.setdefault(name, []).append(run_)
        return {n: [(r[0] - self.t0, r[1] - self.t0, r[2], r[3] - self.t0, r[4] - self.t0)
                    for r in rs] for n, rs in out.items()}

    def _holder_is(self, holder, name):
        c = self.watched.get(name)
        return holder == name or (c is not None and holder == getattr(c, "url", None))

    def violations(self):
        """The list of violations found so far (strings, empty when none)."""
        with self.lock:
            v = list(self.bad)
            claims = sorted(self.claims, key=lambda x: x[1])
            lease = sorted(self.lease, key=lambda x: x[0])
        rel = lambda t: t - self.t0  # noqa: E731
        # R1
        by_term = {}
        for name, t1, t2, term in claims:
            by_term.setdefault(term, {}).setdefault(name, t1)
        for term, names in sorted(by_term.items()):
            if len(names) > 1:
                v.append("R1 term %s claimed by %s" % (term, ", ".join(
                    "%s (first at %.3f s)" % (n, rel(t)) for n, t in sorted(names.items()))))
        # R2: sweep claims by start; a finished window is one with end + tol < start
        by_end = sorted(claims, key=lambda x: x[2])
        j, best = 0, None
        for c in claims:
            while j < len(by_end) and by_end[j][2] + self.tolerance_s < c[1]:
                if best is None or by_end[j][3] > best[3]:
                    best = by_end[j]
                j += 1
            if best is not None and best[3] > c[3]:
                v.append("R2 %s claimed term %s at %.3f s after %s claimed term %s at %.3f s"
                         % (c[0], c[3], rel(c[1]), best[0], best[3], rel(best[2])))
                if len(v) > 50:
                    break
        # R3
        for i, a in enumerate(claims):
            k = i + 1
            while k < len(claims) and claims[k][1] < a[1] + self.grace_s:
                b = claims[k]
                if b[0] != a[0] and max(a[2], b[2]) - min(a[1], b[1]) < self.grace_s:
                    v.append("R3 %s (term %s) and %s (term %s) both claimed leadership within "
                             "%.3f s at %.3f s" % (a[0], a[3], b[0], b[3],
                                                  max(a[2], b[2]) - min(a[1], b[1]), rel(a[1])))
                k += 1
        # R4
        ivs = [(n, r) for n, rs in self.intervals().items() for r in rs]
        for i in range(len(ivs)):
            for k in range(i + 1, len(ivs)):
                (na, a), (nb, b) = ivs[i], ivs[k]
                if na == nb:
                    continue
                # provable part: from the first window's end to the last window's start
                lo, hi = max(a[3], b[3]), min(a[4], b[4])
                if hi - lo > self.tolerance_s:
                    v.append("R4 %s (term %s, %.3f-%.3f s) and %s (term %s, %.3f-%.3f s) "
                             "overlap by %.3f s" % (na, a[2], a[0], a[1], nb, b[2], b[0], b[1],
                                                    hi - lo))
        # S1
        holders, last = {}, None
        for t1, t2, holder, term, rem in lease:
            if term is None:
                continue
            if last is not None and term < last[3]:
                v.append("S1 store term went down from %s to %s at %.3f s" % (last[3], term,
                                                                             rel(t1)))
            holders.setdefault(term, set()).add(holder)
            last = (t1, t2, holder, term)
        for term, hs in holders.items():
            if len(hs) > 1:
                v.append("S1 store term %s had holders %s" % (term, sorted(map(str, hs))))
        # S2
        for name, t1, t2, term in claims:
            hs = holders.get(term)
            if hs and not any(self._holder_is(h, name) for h in hs):
                v.append("S2 %s claimed term %s at %.3f s but the store shows it held by %s"
                         % (name, term, rel(t1), sorted(map(str, hs))))
                holders[term] = set(hs) | {name}  # report once per term
        # S3
        lease_by_end = sorted([x for x in lease if x[3] is not None], key=lambda x: x[1])
        ends = [x[1] for x in lease_by_end]
        maxterm, acc = [], None
        for x in lease_by_end:
            acc = x if acc is None or x[3] > acc[3] else acc
            maxterm.append(acc)
        for name, t1, t2, term in claims:
            k = bisect.bisect_left(ends, t1 - self.tolerance_s) - 1
            if k >= 0 and maxterm[k][3] > term:
                m = maxterm[k]
                v.append("S3 %s claimed term %s at %.3f s after the store showed term %s "
                         "(holder %s) at %.3f s" % (name, term, rel(t1), m[3], m[2], rel(m[1])))
                if len(v) > 100:
                    break
        return v

    def summary(self):
        """Human-readable summary: samples per controller and intervals."""
        lines = ["leader checker: %d lease samples (%d store errors)" %
                 (len(self.lease), self.store_errors)]
        for name, (ok, bad, nclaims) in sorted(self.samples.items()):
            lines.append("  %s: %d answers, %d without answer, %d leadership claims" %
                         (name, ok, bad, nclaims))
        for name, rs in sorted(self.intervals().items()):
            for r in rs:
                lines.append("  %s leader term %s from %.3f s to %.3f s" % (name, r[2], r[0], r[1]))
        return "\n".join(lines)

    def assert_ok(self, min_claims=1):
        """Stops sampling, prints the summary, and raises AssertionError on
        any violation, or when fewer than min_claims leadership claims or no
        lease sample were seen (a checker that saw nothing proves nothing)."""
        self.stop()
        self.checked = True
        print(self.summary(), flush=True)
        v = self.violations()
        if v:
            raise AssertionError("leadership violations:\n  " + "\n  ".join(v[:30]))
        nclaims = sum(s[2] for s in self.samples.values())
        if nclaims < min_claims:
            raise AssertionError("leader checker saw %d leadership claims (< %d)" %
                                 (nclaims, min_claims))
        if not self.lease:
            raise AssertionError("leader checker never read the lease row")

    def _cleanup(self):
        self.stop()
        if not self.checked:
            v = self.violations()
            if v:
                return ["leadership violations (checker not asserted):\n  " +
                        "\n  ".join(v[:30])]
        return []

    def __repr__(self):
        return "LeaderChecker(%d controllers)" % len(self.watched)
