"""The escape suite: root inside the container tries to reach the host (issue 9).

Every attempt of tests/escape_probe.py runs as root in a Debian guest (the test host tree, for
its python3) under nspawnpy and under systemd-nspawn 252, without and with -U.  After each
attempt the probe waits while the test looks at the host: the canary file outside the tree,
the host name, host-wide sysctls, cgroup v1 release agents, canary cgroups at the root of
every hierarchy, a dummy host process, the kernel log, an abstract socket listening in the host's
network namespace, a key in root's user keyring, swap and the clock.  Whatever changed is put
back and counts as an escape of that attempt.

Each attempt ends "refused", "reached" (past the container's defences, nothing of the host
touched) or "escaped"; under nspawnpy it must end the same as under nspawn, or stricter.
Without systemd-nspawn, nspawnpy may only "escape" where nspawn 252 is known to let it
(NSPAWN_252_ESCAPES: facts of nspawn without -U, seen on this machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conftest
import escape_probe as probe
import rootfs
from conftest import skip_unless
from testhost import ScratchCgroup, clean_nspawn_runtime, leftovers, systemd_nspawn

PYTHON = "/usr/bin/python3"
MODES = {"default": [], "userns": ["-U"]}
GROUP_ARGS = {"control": [], "main": [], "readonly": ["--read-only"], "privnet": ["--private-network"], "stub": ["-a"], "tty": [],
              "reboot-poweroff": [], "reboot-restart": []}
CANARY_TEXT = "canary\n"
GROUP_TIMEOUT = 90
# Attempts that must escape when the probe runs with no container around it (only a chroot
# with the host's /proc): shows that the probe and the host checks do see escapes.
CONTROL_ESCAPES = ("chroot_break_classic", "chroot_break_fd", "inherited_fds",
                   "open_by_handle_fs_root", "name_to_handle_and_open_host_file",
                   "ptrace_host_pid", "kill_host_pid",
                   "keyctl_host_keyring", "abstract_socket_to_host", "cgroup_release_agent",
                   "cgroup_outside_subtree", "mknod_kmsg_write")
CASES = [(name, group) for name, att in probe.ATTEMPTS.items() for group in att.groups]

# What systemd-nspawn 252 itself lets root do without -U (run with --register=no, so machined
# applies no device policy): the suite accepts these from nspawnpy only when it cannot compare.
NSPAWN_252_ESCAPES = {
    ("mknod_kmsg_write", "main", "default"): "CAP_MKNOD and no device policy",
    ("host_disk_mount", "main", "default"): "CAP_MKNOD, CAP_SYS_ADMIN, no device policy",
    ("proc_mount_fresh_rw", "main", "default"): "a new proc has a writable /proc/sys",
    ("sysfs_mount_fresh_rw", "main", "default"): "a new sysfs is writable",
    ("remount_proc_sys_rw", "main", "default"): "read-only binds are not locked without -U",
    ("remount_sys_rw", "main", "default"): "read-only binds are not locked without -U",
    ("umount_proc_masks", "main", "default"): "mounts are not locked without -U",
    ("cgroup_release_agent", "main", "default"): "a new cgroup v1 mount shows the host's root",
    ("cgroup_outside_subtree", "main", "default"): "a new cgroup v1 mount shows the host's root",
    ("abstract_socket_to_host", "main", "default"): "the host's network namespace is shared",
    ("abstract_socket_to_host", "main", "userns"): "the host's network namespace is shared",
    ("remount_bind_ro_rw", "main", "default"): "read-only binds are not locked without -U",
    ("remount_read_only_root_rw", "readonly", "default"): "mounts are not locked without -U",
    ("map_files_host_library", "stub", "default"):
        "the stub init is a host binary: its mapped libraries open for writing through "
        "/proc/1/map_files (CAP_SYS_ADMIN)",
}
# Known differences that belong to another part of issue 9 (the suite shows them as xfail).
UNLOCKED = ("issue 9 item 11: PID 1 makes its mounts after its mount namespace was copied "
            "into the user namespace, so their read-only flags are not locked (nspawn makes "
            "them before; see the report)")
KNOWN_WORSE = {
    ("remount_sys_rw", "main", "userns"): UNLOCKED,
    ("remount_bind_ro_rw", "main", "userns"): UNLOCKED,
    ("remount_read_only_root_rw", "readonly", "userns"): UNLOCKED,
}


# ---------------------------------------------------------------------------------------------
# the host side: what the container must not touch, and how to notice that it did


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR_ADD_KEY, NR_KEYCTL, NR_NAME_TO_HANDLE_AT = 248, 250, 303
KEY_SPEC_USER_KEYRING, KEYCTL_SEARCH, KEYCTL_INVALIDATE = -4, 10, 21


def _syscall(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _libc.syscall(ctypes.c_long(nr), *conv)


def _ident(path) -> list[int]:
    st = os.stat(path)
    return [st.st_dev, st.st_ino]


def _file_handle(path: str) -> list:
    """[handle_type, hex bytes] of name_to_handle_at(2) for *path*."""
    h = probe.FileHandle(128, 0)
    mount_id = ctypes.c_int()
    if _syscall(NR_NAME_TO_HANDLE_AT, -100, ctypes.c_char_p(path.encode()), ctypes.byref(h),
                ctypes.byref(mount_id), 0) != 0:
        raise OSError(ctypes.get_errno(), "name_to_handle_at")
    return [h.handle_type, bytes(h.f_handle[:h.handle_bytes]).hex()]


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, fs type) of the mount holding *path*."""
    best = ("/", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mp = left.split()[4]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
                best = (mp, right.split()[0])
    return best


def _cgroup_roots() -> list[Path]:
    roots, seen = [], set()
    for d in sorted(Path("/sys/fs/cgroup").iterdir()):
        if d.is_dir() and not d.is_symlink() and (d / "cgroup.procs").exists():
            real = d.resolve()
            if real not in seen:
                seen.add(real)
                roots.append(d)
    if (Path("/sys/fs/cgroup") / "cgroup.procs").exists():
        roots.append(Path("/sys/fs/cgroup"))
    return roots


class Host:
    """What the attempts aim at, set up on the host by the test, and the checks that see them."""

    def __init__(self, scratch: Path, tree: Path):
        self.scratch, self.tree = scratch, tree
        self.token = os.urandom(4).hex()
        self.canary = scratch / "canary"
        self.canary.write_text(CANARY_TEXT)
        self.hostname = socket.gethostname()
        self.knobs = {p: Path(p).read_text() for p in self._knob_paths()}
        self.swaps = Path("/proc/swaps").read_text()
        self.clock_offset = time.time() - time.monotonic()
        self.dummy = self._start_dummy()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(f"\0nspawnpy-escape-{self.token}")
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.key_desc = f"nspawnpy-escape-{self.token}"
        self.key_id = _syscall(NR_ADD_KEY, b"user", self.key_desc.encode(), b"secret", 6,
                               KEY_SPEC_USER_KEYRING)
        self.cgroup_name = f"{conftest._testhost.FIXTURE_CGROUP_PREFIX}esccanary-{os.getpid()}-{self.token[:6]}"
        self.cgroups = [root / self.cgroup_name for root in _cgroup_roots()]
        for d in self.cgroups:
            d.mkdir()
        self.hostbin = scratch / "hostbin"
        self.hostbin.mkdir(mode=0o755)
        suid = self.hostbin / "py-suid"
        shutil.copy(tree / "usr/bin/python3.11", suid)
        os.chown(suid, 0, 0)
        os.chmod(suid, 0o4755)
        self.world_writable = self.hostbin / "world-writable"
        self.world_writable.write_text(CANARY_TEXT)
        self.world_writable.chmod(0o666)
        self.kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    @staticmethod
    def _knob_paths() -> list[str]:
        paths = [f"/proc/sys/{probe.PRINTK_BURST}", f"/sys/{probe.RCU_EXPEDITED}",
                 "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe"]
        paths += [str(root / "release_agent") for root in _cgroup_roots()
                  if (root / "release_agent").exists()]
        return [p for p in paths if os.path.exists(p)]

    def _start_dummy(self) -> subprocess.Popen:
        return subprocess.Popen([PYTHON, "-c", "import time; time.sleep(3600)", self.token],
                                stdin=subprocess.DEVNULL)

    def config(self, pty: int | None = None) -> dict:
        mountpoint, fstype = _mount_of(str(self.canary))
        st = os.stat(self.canary)
        binaries = [os.path.realpath(PYTHON), os.path.realpath(sys.executable)]
        binaries += [os.path.realpath(p) for p in [systemd_nspawn()] if p]
        return {
            "token": self.token,
            "canary": str(self.canary),
            "canary_id": _ident(self.canary),
            "canary_rel": "/" + os.path.relpath(self.canary, mountpoint),
            "canary_handle": _file_handle(str(self.canary)),
            "host_fsroot_id": _ident(mountpoint),
            "host_disk": [os.major(st.st_dev), os.minor(st.st_dev)],
            "host_fstype": fstype,
            "host_ns": {t: _ident(f"/proc/self/ns/{t}") for t in probe.NS_TYPES
                        if os.path.exists(f"/proc/self/ns/{t}")},
            "host_binaries": [[*_ident(b), b] for b in sorted(set(binaries))],
            "dummy_pid": self.dummy.pid,
            "abstract": f"nspawnpy-escape-{self.token}",
            "key_desc": self.key_desc,
            "key_planted": f"nspawnpy-escape-planted-{self.token}",
            "cgroup_canaries": ["/" + self.cgroup_name],
            "suid_binary": "/escape-host/py-suid",
            "host_pty": _ident(f"/proc/self/fd/{pty}") if pty is not None else None,
        }

    def start_run(self, group: str) -> None:
        os.lseek(self.kmsg, 0, os.SEEK_END)

    def check(self, attempt: str) -> list[tuple[str, str]]:
        """What the last attempt changed on the host, as (outcome, description); undone."""
        found = [(probe.ESCAPED, c) for check in (
            self._check_canary, self._check_hostname, self._check_knobs, self._check_dummy,
            self._check_kmsg, self._check_listener, self._check_keyring, self._check_cgroups,
            self._check_swap_and_clock) for c in check()]
        if attempt == "suid_file_created_in_tree":
            found += self._check_suid_copy()
        return found

    def _check_canary(self):
        for path in (self.canary, self.world_writable):
            text = path.read_text()
            if text != CANARY_TEXT:
                path.write_text(CANARY_TEXT)
                yield f"host file {path.name} written: {text[len(CANARY_TEXT):]!r}"
        marker = self.tree / probe.READ_ONLY_MARKER.lstrip("/")
        if marker.exists():
            marker.unlink()
            yield "file written to a --read-only tree"

    def _check_hostname(self):
        if socket.gethostname() != self.hostname:
            name = socket.gethostname()
            socket.sethostname(self.hostname)
            yield f"host name changed to {name}"

    def _check_knobs(self):
        for path, value in self.knobs.items():
            now = Path(path).read_text()
            if now != value:
                Path(path).write_text(value if value.strip() else "\n")
                yield f"{path} changed from {value!r} to {now!r}"

    def _check_dummy(self):
        if self.dummy.poll() is not None:
            self.dummy = self._start_dummy()
            yield "host dummy process killed"
            return
        status = Path(f"/proc/{self.dummy.pid}/status").read_text()
        tracer = next(l.split()[1] for l in status.splitlines() if l.startswith("TracerPid:"))
        if tracer != "0":
            yield f"host dummy process traced by {tracer}"

    def _check_kmsg(self):
        while True:
            try:
                record = os.read(self.kmsg, 8192).decode(errors="replace")
            except BlockingIOError:
                return
            except BrokenPipeError:   # the ring buffer wrapped: read on
                continue
            if self.token in record or "sysrq: HELP" in record:
                yield f"host kernel log got: {record.split(';', 1)[-1].strip()}"

    def _check_listener(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    msg = conn.recv(200).decode(errors="replace")
            yield f"abstract socket in the host's network namespace reached ({msg})"

    def _check_keyring(self):
        planted = f"nspawnpy-escape-planted-{self.token}".encode()
        key = _syscall(NR_KEYCTL, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, b"user", planted, 0)
        if key >= 0:
            _syscall(NR_KEYCTL, KEYCTL_INVALIDATE, key)
            yield "key planted in host root's user keyring"

    def _check_cgroups(self):
        for d in self.cgroups:
            for child in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
                yield f"cgroup made in the host's {child}"
            nor = d / "notify_on_release"
            if nor.exists() and nor.read_text().strip() != "0":
                nor.write_text("0")
                yield f"{nor} set"
            procs = (d / "cgroup.procs").read_text().split()
            if procs:
                yield f"processes {procs} moved into the host's {d}"

    def _check_swap_and_clock(self):
        if Path("/proc/swaps").read_text() != self.swaps:
            yield "host swap changed"
        if abs(time.time() - time.monotonic() - self.clock_offset) > 5:
            yield "host clock changed"

    def _check_suid_copy(self):
        path = self.tree / probe.WORK.lstrip("/") / "suid-copy"
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            path.unlink()
            if st.st_uid == 0 and st.st_mode & stat.S_ISUID:
                yield probe.REACHED, "setuid file owned by the host's root on the host disk"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dummy.kill()
            self.dummy.wait()
        self.listener.close()
        os.close(self.kmsg)
        if self.key_id >= 0:
            _syscall(NR_KEYCTL, KEYCTL_INVALIDATE, self.key_id)
        for d in self.cgroups:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# running one group of attempts under one tool


class GroupRun:
    def __init__(self):
        self.results: dict[str, tuple[str, str]] = {}
        self.status: int | None = None
        self.output = b""


def tool_command(tool: str, tree: Path, host: Host, mode: str, group: str) -> list[str]:
    if tool == "chroot":   # no container at all: the control run
        return ["unshare", "--mount", "--propagation=private", "sh", "-c",
                'mount --bind /proc "$0/proc" && exec chroot "$0" "$@"', str(tree),
                PYTHON, "/escape-probe.py", group, *CONTROL_ESCAPES]
    exe = [PYTHON, "-m", "nspawnpy"] if tool == "nspawnpy" else [systemd_nspawn()]
    return [*exe, "--register=no", "--keep-unit", "-q", "-D", str(tree),
            f"--bind-ro={host.hostbin}:/escape-host", *MODES[mode], *GROUP_ARGS[group],
            PYTHON, "/escape-probe.py", group]


def _make_fifo(path: Path) -> int:
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def run_group(tool: str, host: Host, mode: str, group: str) -> GroupRun:
    """Run the probe's *group* under *tool*; after each attempt, check the host."""
    tree = host.tree
    (tree / probe.REBOOT_MARKER.lstrip("/")).unlink(missing_ok=True)
    report = _make_fifo(tree / probe.REPORT_FIFO.lstrip("/"))
    ack = _make_fifo(tree / probe.ACK_FIFO.lstrip("/"))
    master = slave = None
    if group == "tty":
        master, slave = os.openpty()
    host_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)   # a caller's fd the tool must close
    (tree / probe.CONFIG.lstrip("/")).write_text(json.dumps(host.config(slave)))
    host.start_run(group)
    out = open(host.scratch / f"out-{tool}-{mode}-{group}", "w+b")
    run = GroupRun()
    try:
        with ScratchCgroup("escape") as cg:
            proc = subprocess.Popen(
                tool_command(tool, tree, host, mode, group), preexec_fn=cg.enter,
                pass_fds=(host_root,), env={**conftest._nspawnpy_env()},
                stdin=slave if slave is not None else subprocess.DEVNULL,
                stdout=slave if slave is not None else out,
                stderr=slave if slave is not None else out)
            try:
                _converse(proc, host, report, ack, master, run)
            finally:
                if proc.poll() is None:
                    proc.kill()
                run.status = proc.wait()
    finally:
        if tool == "nspawn":
            clean_nspawn_runtime(tree.name)
        for fd in (report, ack, host_root, master, slave):
            if fd is not None:
                os.close(fd)
        out.seek(0)
        run.output += out.read()
        out.close()
    return run


def _converse(proc, host: Host, report: int, ack: int, master, run: GroupRun) -> None:
    buf = b""
    deadline = time.monotonic() + GROUP_TIMEOUT
    watched = [report] + ([master] if master is not None else [])
    while time.monotonic() < deadline:
        ready, _, _ = select.select(watched, [], [], 0.1)
        if master in ready:
            with contextlib.suppress(OSError):
                run.output += os.read(master, 65536)
        if report in ready:
            buf += os.read(report, 65536)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg["attempt"] != "END":
                    found = host.check(msg["attempt"])
                    outcome = probe.worst(msg["outcome"], *(o for o, _ in found))
                    detail = "; ".join([msg["detail"], *(d for _, d in found)])
                    run.results[msg["attempt"]] = (outcome, detail)
                os.write(ack, b"\n")
        elif proc.poll() is not None:
            return
    raise AssertionError(f"{proc.args} did not end within {GROUP_TIMEOUT}s")


# ---------------------------------------------------------------------------------------------
# fixtures and tests


class Runs:
    """The group runs of the module, made on first use (each tool, mode and group once)."""

    def __init__(self, host: Host):
        self.host = host
        self.cache: dict[tuple[str, str, str], GroupRun] = {}

    def get(self, tool: str, mode: str, group: str) -> GroupRun:
        key = (tool, mode, group)
        if key not in self.cache:
            self.cache[key] = run_group(tool, self.host, mode, group)
        return self.cache[key]

    def outcome(self, tool: str, mode: str, group: str, name: str) -> tuple[str, str]:
        run = self.get(tool, mode, group)
        assert name in run.results, (
            f"{tool} {mode} {group}: no result for {name} (status {run.status}):\n"
            f"{run.output.decode(errors='replace')[-3000:]}")
        return run.results[name]


@pytest.fixture(scope="module")
def runs():
    try:
        tarball = rootfs.testhost_tarball()
    except rootfs.RootfsUnavailable as e:
        pytest.skip(f"test host tree unavailable (it has the probe's python3): {e}")
    scratch = conftest._scratch_dir("esc")
    tree = rootfs.restore(tarball, scratch / f"esc-{os.urandom(3).hex()}")
    shutil.copy(Path(__file__).with_name("escape_probe.py"), tree / "escape-probe.py")
    host = Host(scratch, tree)
    all_runs = Runs(host)
    try:
        yield all_runs
    finally:
        host.close()
        _write_summary(all_runs)
        conftest._remove_scratch(scratch)
    assert leftovers(scratch) == []


def _write_summary(runs: Runs) -> None:
    """With $NSPAWNPY_ESCAPE_SUMMARY set, dump every outcome there (for reports)."""
    path = os.environ.get("NSPAWNPY_ESCAPE_SUMMARY")
    if path:
        Path(path).write_text(json.dumps(
            {" ".join(k): {"status": r.status, "results": r.results}
             for k, r in runs.cache.items()}, indent=1))


def _id(case):
    return f"{case[0]}-{case[1]}" if case[1] != "main" else case[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,group", CASES, ids=map(_id, CASES))
def test_attempt_ends_no_worse_than_under_nspawn(runs, name, group, mode, request):
    if (name, group, mode) in KNOWN_WORSE:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_WORSE[name, group, mode]))
    ours, ours_detail = runs.outcome("nspawnpy", mode, group, name)
    if not systemd_nspawn():
        allowed = NSPAWN_252_ESCAPES.get((name, group, mode))
        assert ours != probe.ESCAPED or allowed, f"escaped under nspawnpy: {ours_detail}"
        return
    theirs, theirs_detail = runs.outcome("nspawn", mode, group, name)
    assert probe.RANK[ours] <= probe.RANK[theirs], (
        f"{name} ({mode}): nspawnpy {ours} ({ours_detail}), "
        f"systemd-nspawn {theirs} ({theirs_detail})")


def test_probe_sees_escapes_without_a_container(runs):
    """The control: in a plain chroot (host namespaces, all capabilities, no seccomp) the
    attempts that the host checks can see do escape."""
    skip_unless(shutil.which("unshare") and shutil.which("chroot"), "unshare/chroot missing")
    control = runs.get("chroot", "default", "control")
    outcomes = {name: control.results.get(name, ("missing", "")) for name in CONTROL_ESCAPES}
    assert {n: o for n, (o, _) in outcomes.items() if o != probe.ESCAPED} == {}, outcomes


def test_nspawn_252_escapes_are_the_listed_ones(runs):
    """Keeps NSPAWN_252_ESCAPES (used where systemd-nspawn is absent) true to nspawn."""
    skip_unless(systemd_nspawn(), "systemd-nspawn is not installed")
    seen = {(name, group, mode) for name, group in CASES for mode in MODES
            if runs.outcome("nspawn", mode, group, name)[0] == probe.ESCAPED}
    assert seen == set(NSPAWN_252_ESCAPES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group", ["reboot-poweroff", "reboot-restart"])
def test_reboot_ends_only_the_container_as_under_nspawn(runs, group, mode):
    ours = runs.get("nspawnpy", mode, group)
    assert ours.status == (0 if group == "reboot-poweroff" else 133), ours.output
    if systemd_nspawn():
        assert ours.status == runs.get("nspawn", mode, group).status
