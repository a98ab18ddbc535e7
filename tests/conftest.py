"""Fixtures shared by every test file.

  repo                 Path of the checkout
  nspawnpy_cmd         ["/usr/bin/python3", "-m", "nspawnpy"]   (run it with nspawnpy_env)
  nspawnpy_env         environment for it (PYTHONPATH=repo)
  run_nspawnpy         run_nspawnpy(*args, input=None, timeout=60, check=None) -> CompletedProcess
                       (past the timeout: hangdiag.Hung, what the run was doing)
  busybox_root         fresh busybox tree per test, under /var/tmp, removed afterwards
  debian_root          fresh Debian bookworm tree per test (from the cached tarball)
  netns                path of a fresh named network namespace (ip netns), removed afterwards
  testhost             session-wide systemd test host (see testhost.TestHost)
  systemd_nspawn       run_systemd_nspawn(args, ...) for the installed systemd-nspawn (skips if absent)

Helpers: leftovers(under=None) -> list[str]; skip_unless(cond, reason); run_in(...) and
run_pipe(...) run a container with --register=no -q, spawn(...) starts one; stop(popen) kills and reaps a process
that still runs (for finally blocks); processes_in_pid_namespace(ns); DEFAULT_CAPS.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

if os.path.dirname(__file__) not in sys.path:
    sys.path.insert(0, os.path.dirname(__file__))

import hangdiag  # noqa: E402
import rootfs  # noqa: E402
import testhost as _testhost  # noqa: E402
from testhost import leftovers, check_result, wait_for  # noqa: E402,F401  (re-exported for tests)

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
QUIET = ("--register=no", "-q")
# nspawn 252's default capability bounding set (no private network), and what a container
# shows of it here: no more than our own bounding set.
NSPAWN_DEFAULT_CAPS = 0xFDECAFFF


def _own_bounding_set() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))


DEFAULT_CAPS = NSPAWN_DEFAULT_CAPS & _own_bounding_set()


def run_in(run_nspawnpy, root, *options, script="true", **kw) -> subprocess.CompletedProcess:
    """`sh -c script` in a container on `root` with `options` (run_nspawnpy's keywords)."""
    kw.setdefault("check", 0)
    return run_nspawnpy(*QUIET, "-D", root, *options, "/bin/sh", "-c", script, **kw)


def run_pipe(run_nspawnpy, root, *cmd, **kw) -> subprocess.CompletedProcess:
    """`cmd` in a container on `root` with --console=pipe."""
    return run_nspawnpy(*QUIET, "--console=pipe", "-D", root, *cmd, **kw)


def spawn(root, *args, **kw) -> subprocess.Popen:
    """nspawnpy --register=no -q -D root ARGS in the background; stdout/stderr piped (text)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([PYTHON, "-m", "nspawnpy", *QUIET, "-D", str(root), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True, **kw)


def stop(process: subprocess.Popen) -> None:
    """Kill and reap `process` if it still runs (for finally blocks)."""
    if process.poll() is None:
        process.kill()
    process.wait()


def processes_in_pid_namespace(namespace: str) -> list[int]:
    """PIDs of the processes whose PID namespace is `namespace` (a readlink of ns/pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    found.append(int(entry))
            except OSError:
                pass
    return found
SCRATCH = Path("/var/tmp")


def pytest_sessionstart(session):
    # Fixtures of sessions that were killed (SIGKILL) could not tear down: do it for them.
    _testhost.reap_stale(SCRATCH)


def skip_unless(cond, reason: str) -> None:
    """Skip the calling test with *reason* unless *cond* holds."""
    if not cond:
        pytest.skip(reason)


def _nspawnpy_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("LANG", "C.UTF-8")
    return env


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def nspawnpy_cmd() -> list[str]:
    return [PYTHON, "-m", "nspawnpy"]


@pytest.fixture(scope="session")
def nspawnpy_env() -> dict:
    return _nspawnpy_env()


@pytest.fixture(scope="session")
def run_nspawnpy(nspawnpy_cmd, nspawnpy_env):
    """run_nspawnpy(*args, input=None, timeout=60, check=None): run nspawnpy from the checkout.
    check=None/False: any status; True: must be 0; an int: must be that status."""

    def run(*args, input: str | None = None, timeout: float = 60, check=None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        r = hangdiag.run([*nspawnpy_cmd, *map(str, args)], timeout, input=input,
                         stdin=None if input is not None else subprocess.DEVNULL,
                         env={**nspawnpy_env, **(env or {})}, cwd=REPO)
        return check_result(r, check)

    return run


def _scratch_dir(label: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"nspawnpy-test-{label}-{os.getpid()}-", dir=SCRATCH))


def _remove_scratch(d: Path) -> None:
    stray = leftovers(d)
    if stray:
        # Never rm -rf through a mount; leave it for inspection and fail loudly.
        pytest.fail(f"{d} still has mounts after the test: {stray}")
    rootfs.rmtree(d)


@pytest.fixture
def busybox_root():
    """A fresh busybox tree (Path) in a private directory under /var/tmp.  Its basename is
    unique (bb-XXXXXX), so the machine name derived from it is too."""
    d = _scratch_dir("bb")
    try:
        yield rootfs.busybox_tree(d / f"bb-{secrets.token_hex(3)}")
    finally:
        _remove_scratch(d)


@pytest.fixture
def netns():
    skip_unless(shutil.which("ip"), "iproute2 is not installed")
    name = f"nspawnpy-ns-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture
def debian_root():
    """A fresh Debian bookworm tree (minbase + systemd, dbus) restored from the cache."""
    skip_unless(shutil.which("debootstrap"), "debootstrap is not installed")
    try:
        tarball = rootfs.debian_tarball()
    except rootfs.RootfsUnavailable as e:
        pytest.skip(f"Debian tree unavailable: {e}")
    d = _scratch_dir("deb")
    try:
        yield rootfs.restore(tarball, d / f"deb-{secrets.token_hex(3)}")
    finally:
        _remove_scratch(d)


@pytest.fixture
def systemd_nspawn():
    """run_systemd_nspawn(args, input=None, timeout=60, check=None) with the installed
    systemd-nspawn, from a scratch cgroup, cleaning up after it."""
    skip_unless(_testhost.systemd_nspawn(), "systemd-nspawn is not installed (systemd-container)")
    return _testhost.run_systemd_nspawn


def booted_testhost(label: str, **options):
    """Generator for a test host fixture: skip where it can't run, boot it, yield it, stop it
    and fail on anything its teardown found."""
    skip_unless(_testhost.systemd_nspawn(), "systemd-nspawn is not installed (systemd-container)")
    skip_unless(shutil.which("nsenter"), "nsenter is not installed (util-linux)")
    skip_unless(_testhost.cgroup_hierarchies(), "no usable cgroup hierarchy")
    try:
        rootfs.testhost_tarball()
    except rootfs.RootfsUnavailable as e:
        pytest.skip(f"test host tree unavailable: {e}")
    host = _testhost.TestHost(REPO, _scratch_dir(label), **options)
    try:
        host.start()
    except BaseException:
        host.stop()
        raise
    yield host
    problems = host.stop()
    if problems:
        raise AssertionError(f"test host ({label}) teardown: " + "; ".join(problems))


@pytest.fixture(scope="session")
def testhost():
    """The systemd test host, booted once per session (TESTHOST.md)."""
    yield from booted_testhost("th")
