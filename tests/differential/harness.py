"""Run one scenario under systemd-nspawn and under nspawnpy, on the same tree at the same path,
with the same options, environment and working directory, and compare the probe's facts.

Each run gets a fresh copy of the scenario's world: the tree at <scratch>/<machine>, the host
files its options name (bind sources, .nspawn files), all made by the scenario's set-up, and all
removed afterwards.  Both tools run from a scratch cgroup of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pty
import re
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import rootfs  # noqa: E402
import testhost  # noqa: E402
from differential import facts as factlib  # noqa: E402

PYTHON = "/usr/bin/python3"
PROBE = HERE / "probe.sh"
PROBE_IN_TREE = "/usr/bin/probe"  # in /usr: it must survive --volatile=yes
TIMEOUT = 60
# systemd-nspawn 252 says this at every exit on a host whose /run is no tmpfs (cleaning up
# /run/systemd/nspawn/propagate/NAME): noise, not an outcome.
NSPAWN_RUN_NOISE = "Attempted to remove disk file system under"
# What one of nspawn's two processes adds when the other failed, in either order: the
# other's message is the one that says why.
GENERIC_FAILURES = {"Parent died too early", "Child died too early."}
# The tools' own environment: the same for both, and nothing of the test runner's.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "TERM": "xterm-256color", "HOME": "/root"}


@dataclass
class World:
    """Where one run happens: the scratch directory, the tree in it and the machine name."""
    scratch: Path
    machine: str
    tree_kind: str = "busybox"

    @property
    def tree(self) -> Path:
        return self.scratch / self.machine

    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def short(self) -> str:
        """A short unique word for host-side names (links: at most 15 characters)."""
        return self.machine.replace("-", "")[-10:]


@dataclass
class Scenario:
    """One line of the matrix.  *args* may contain {tree}, {scratch} and {machine}."""
    name: str
    args: tuple[str, ...] = ()
    command: tuple[str, ...] = ("/bin/sh", PROBE_IN_TREE)
    tree: str = "busybox"                      # busybox | debian
    setup: Callable[[World], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    console: str = "pipes"                     # pipes | pty (interactive, under a pty)
    report_file: str | None = None             # in the tree, for consoles that show nothing
    boot_probe: bool = False                   # the probe is /sbin/init (for -b)
    pass_fd: bool = False                      # leave an extra fd open in the caller
    given_ids: tuple[str, ...] = ()            # ids the options name (kept, not normalised)
    note: str = ""

    def argv(self, world: World) -> list[str]:
        fmt = {"tree": str(world.tree), "scratch": str(world.scratch), "machine": world.machine,
               "short": world.short}
        args = [a.format(**fmt) for a in self.args]
        command = list(self.command)
        if self.report_file and command:  # (a booted system's service writes it itself)
            command = [*command, self.report_file]
        if self.boot_probe:
            command = []
        return ["--register=no", "--keep-unit", "-q", "-D", str(world.tree), *args, *command]


@dataclass
class Run:
    tool: str
    status: int | None
    output: str
    errors: str
    facts: dict[str, str]


def tool_command(tool: str) -> list[str]:
    if tool == "nspawn":
        return [testhost.systemd_nspawn() or "systemd-nspawn"]
    return [PYTHON, "-m", "nspawnpy"]


def tool_env(tool: str, scenario: Scenario) -> dict[str, str]:
    env = {**BASE_ENV, **scenario.env}
    if tool == "nspawnpy":
        env["PYTHONPATH"] = str(REPO)
    return env


# ---------------------------------------------------------------------------------------------
# the world


def build_world(scenario: Scenario, world: World) -> None:
    world.scratch.mkdir(parents=True, exist_ok=True)
    if scenario.tree == "debian":
        rootfs.debian_tree(world.tree)
    else:
        rootfs.busybox_tree(world.tree)
    shutil.copy(PROBE, world.tree / PROBE_IN_TREE.lstrip("/"))
    if scenario.boot_probe:
        init = world.tree / "sbin/init"
        init.unlink()
        shutil.copy(PROBE, init)
        os.chmod(init, 0o755)
    if scenario.setup:
        scenario.setup(world)


def tear_down_world(world: World) -> list[str]:
    """Remove the world; return what could not be removed cleanly (mounts left behind)."""
    problems = []
    for cleanup in reversed(world.cleanups):
        with contextlib.suppress(OSError):
            cleanup()
    world.cleanups.clear()
    stray = testhost.leftovers(world.scratch) + [
        f"link {link}" for link in os.listdir("/sys/class/net")
        if world.short in link or world.machine[:12] in link]
    if stray:
        return [f"left behind: {s}" for s in stray]
    for d in (world.scratch,):
        if d.exists():
            with contextlib.suppress(OSError):
                st = world.tree.stat()
                Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}").unlink(
                    missing_ok=True)
            rootfs.rmtree(d)
    testhost.clean_nspawn_runtime(world.machine)
    return problems


def manifest(tree: Path) -> dict[str, tuple]:
    """What a later run would find in the tree: type, mode, owner, link target and content."""
    out: dict[str, tuple] = {}
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = "/" + os.path.relpath(p, tree)
            extra = ""
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = f"{st.st_size}:{st.st_mtime_ns}"
            out[rel] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, extra)
    return out


def _content(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    except OSError as e:
        return f"unreadable ({e.strerror})"


def tree_changes(tree: Path, before: dict[str, tuple], ignore: set[str]) -> dict[str, str]:
    """Facts about what the run changed in the tree (seen by the next run of the image)."""
    after = manifest(tree)
    changes = {}
    for rel in sorted(set(before) | set(after)):
        if rel in ignore or before.get(rel) == after.get(rel):
            continue
        a = after.get(rel)
        if a is None:
            changes[f"tree.{rel}"] = "removed"
            continue
        b = before.get(rel)
        if b and a[0].startswith("d") and a[:3] == b[:3]:
            continue  # a directory's mtime: its entries are compared one by one
        desc = f"{a[0]} {a[1]}:{a[2]}"
        if a[0].startswith("l"):
            desc += f" -> {a[3]}"
        elif a[0].startswith("-"):
            desc += f" sha256={_content(tree / rel.lstrip('/'))}"
        changes[f"tree.{rel}"] = desc
    return changes


# ---------------------------------------------------------------------------------------------
# running a tool


def _run_pipes(cmd, env, cwd, pass_fds, preexec) -> tuple[int | None, str, str]:
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=env, cwd=cwd, timeout=TIMEOUT, pass_fds=pass_fds,
                           preexec_fn=preexec, errors="replace")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, out, err + "\n[timeout]"
    return r.returncode, r.stdout, r.stderr


def _run_pty(cmd, env, cwd, pass_fds, preexec) -> tuple[int | None, str, str]:
    """Interactive console: the tool's stdin/stdout/stderr are a pty we hold the master of."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                             pass_fds=pass_fds, start_new_session=True,
                             preexec_fn=lambda: (_controlling_tty(), preexec()))
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave fd is closed
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    try:
        status = p.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        status = None
    os.close(master)
    return status, b"".join(chunks).decode(errors="replace"), ""


def _controlling_tty() -> None:
    import fcntl
    import termios
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _caller_limits() -> None:
    """The same starting point on every machine: the caller's soft RLIMIT_NOFILE raised to its
    hard limit (what the tools do with it is compared)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _caller_signals() -> None:
    """The caller ignores SIGQUIT (as a shell does for a background job) and SIGUSR1: ignored
    dispositions survive exec(), so every scenario shows whether a tool resets them for the
    container (nspawn does)."""
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def run_tool(tool: str, scenario: Scenario, world: World) -> Run:
    build_world(scenario, world)
    before = manifest(world.tree)
    cmd = [*tool_command(tool), *scenario.argv(world)]
    env = tool_env(tool, scenario)
    extra_fd = os.open("/dev/null", os.O_RDONLY) if scenario.pass_fd else None
    try:
        with testhost.ScratchCgroup("diff") as cg:
            runner = _run_pty if scenario.console == "pty" else _run_pipes
            status, output, errors = runner(cmd, env, str(world.scratch),
                                            (extra_fd,) if extra_fd is not None else (),
                                            lambda: (cg.enter(), _caller_limits(),
                                                     _caller_signals()))
    finally:
        if extra_fd is not None:
            os.close(extra_fd)
    report = "\n".join(line for line in output.splitlines() if NSPAWN_RUN_NOISE not in line)
    ignore = {PROBE_IN_TREE}
    if scenario.report_file:
        ignore.add(scenario.report_file)
        with contextlib.suppress(OSError):
            report = (world.tree / scenario.report_file.lstrip("/")).read_text(errors="replace")
    ctx = factlib.Context(str(world.tree), str(world.scratch), world.machine, scenario.given_ids)
    found = factlib.facts(report, ctx)
    found["exit.status"] = str(status)
    if found["probe.complete"] == "no":
        # The tool refused or the payload failed: what it said is then the observable outcome.
        last = [line for line in (errors or output).splitlines()
                if line.strip() and not line.startswith(NSPAWN_RUN_NOISE)
                and line.strip() not in GENERIC_FAILURES][-1:]
        # (nspawnpy names the option after nspawn's sentence where the sentence does not)
        found["exit.message"] = re.sub(r" \(--?[\w-]+=\)$", "", ctx.text(last[0])) if last else ""
    for k, v in tree_changes(world.tree, before, ignore).items():
        found[ctx.text(k)] = ctx.text(v)
    return Run(tool, status, output, errors, found)


def compare(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{fact: (nspawn's value, ours)} for every fact that differs."""
    absent = "<absent>"
    return {k: (theirs.get(k, absent), ours.get(k, absent))
            for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)}
