"""nspawn 252's seccomp policy: what the payload may call, and what fails with which errno.

Each behaviour test forks a child that first moves into fresh mount/UTS/IPC/net
namespaces (so nothing it is allowed to do reaches the host), installs the
filter, then tries system calls with arguments chosen to fail harmlessly with an
errno other than EPERM whenever the call gets through the filter.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nspawnpy.pid1 import seccomp_load  # noqa: E402
from nspawnpy.seccomp import cache, policy as seccomp  # noqa: E402
from conftest import NSPAWN_DEFAULT_CAPS  # noqa: E402
from testhost import ScratchCgroup  # noqa: E402

# The capability set nspawn keeps by default (no private network).
DEFAULT_CAPS = {i for i in range(64) if NSPAWN_DEFAULT_CAPS >> i & 1}

# Runs in the child (and, for the differential test, as PID 1 inside systemd-nspawn):
# PROBES maps a label to (syscall name, args); prints {label: 0 or errno} as JSON.
PROBE_SOURCE = r'''
import ctypes, json, os
_so = ctypes.CDLL("libseccomp.so.2")
_so.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

def probe(probes):
    out = {}
    pipe_fd = os.pipe()[0]             # fsync() on a pipe: EINVAL, unless suppressed
    for label, (name, args) in probes.items():
        nr = name if isinstance(name, int) else _so.seccomp_syscall_resolve_name(name.encode())
        args = [pipe_fd if a == "PIPE" else a for a in args]
        conv = [ctypes.c_long(a) if isinstance(a, int) else ctypes.c_char_p(a.encode()) for a in args]
        ctypes.set_errno(0)
        r = _libc.syscall(ctypes.c_long(nr), *conv)
        out[label] = ctypes.get_errno() if r == -1 else 0
        if name == "socket" and r >= 0:
            os.close(r)
    return out
'''

AT_FDCWD = -100
O_DSYNC = 0o10000
PROBES = {
    # not in nspawn's allow list
    "swapon": ("swapon", [0, 0]),                       # EFAULT if let through
    "kexec_load": ("kexec_load", [0, 0, 0, 0xFFFF]),    # EINVAL
    "bpf": ("bpf", [0xFFFF, 0, 0]),                     # EINVAL
    "add_key": ("add_key", [0, 0, 0, 0, 0]),            # EFAULT
    "perf_event_open": ("perf_event_open", [0, 0, 0, -1, 0]),
    "quotactl": ("quotactl", [0, 0, 0, 0]),
    "open_by_handle_at": ("open_by_handle_at", [-1, 0, 0]),
    "fanotify_init": ("fanotify_init", [0xFFFFFFFF, 0]),
    # capability-gated rows, caps not kept by default
    "clock_settime": ("clock_settime", [9999, 0]),       # @clock / CAP_SYS_TIME
    "mlock": ("mlock", [0, 0]),                          # @memlock / CAP_IPC_LOCK
    "init_module": ("init_module", [0, 0, 0]),           # @module / CAP_SYS_MODULE
    "ioperm": ("ioperm", [0, 0, 0]),                     # @raw-io / CAP_SYS_RAWIO
    "acct": ("acct", [1]),                               # CAP_SYS_PACCT; EFAULT if through
    "syslog": ("syslog", [0xFFFF, 0, 0]),                # CAP_SYSLOG; EINVAL if through
    # allowed by default
    "mount": ("mount", [0, 0, 0, 0, 0]),                 # EFAULT
    "pivot_root": ("pivot_root", [0, 0]),
    "sethostname": ("sethostname", [0, -1]),             # EINVAL
    "setns": ("setns", [-1, 0]),                         # EBADF
    "splice": ("splice", [-1, 0, -1, 0, 1, 0]),          # EBADF
    "ptrace": ("ptrace", [0xFFFF, 0, 0, 0]),             # CAP_SYS_PTRACE kept; ESRCH
    "reboot": ("reboot", [0, 0, 0, 0]),                  # CAP_SYS_BOOT kept; bad magic: EINVAL
    "times": ("times", [0]),                             # @process and @timer
    "alarm": ("alarm", [0]),                             # @timer
    "fsync": ("fsync", [-1]),                            # @sync; EBADF
    "syncfs": ("syncfs", [-1]),
    "fsync_pipe": ("fsync", ["PIPE"]),                   # EINVAL
    "fdatasync_pipe": ("fdatasync", ["PIPE"]),
    "open_dsync": ("openat", [AT_FDCWD, "/proc/self/no-such-file", O_DSYNC]),   # ENOENT
    "openat2": ("openat2", [AT_FDCWD, 0, 0, 0]),         # EINVAL (size 0)
    "netlink_audit": ("socket", [16, 3, 9]),             # AF_NETLINK, SOCK_RAW, NETLINK_AUDIT
    "netlink_route": ("socket", [16, 3, 0]),
}
if os.uname().machine == "x86_64":
    PROBES["mseal"] = (462, [0, 0, 0])   # newer than systemd 252's @known; 0 if let through


def _unshare(flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


def install_filter(caps, allow, deny, suppress_sync, cache_dir=None) -> None:
    """What a container start does: compile (or, with `cache_dir`, cache) on the host side,
    then load into the process that execs the payload."""
    policy = cache.available()

    def build():
        return seccomp.compile_filters(caps, allow, deny, suppress_sync, policy=policy)
    key = cache.key(caps, allow, deny, suppress_sync, policy)
    seccomp_load.load(cache.cached(cache_dir, key, build) if cache_dir else build())


def run_filtered(caps=DEFAULT_CAPS, allow=(), deny=(), suppress_sync=False,
                 probes=PROBES, cache_dir=None) -> dict:
    """Fork, install the filter in the child, run the probes there; return {label: errno}."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(rfd)
            _unshare(0x00020000 | 0x04000000 | 0x08000000 | 0x40000000)  # NEWNS UTS IPC NET
            namespace: dict = {}
            exec(PROBE_SOURCE, namespace)
            t0 = time.perf_counter()
            install_filter(set(caps), list(allow), list(deny), suppress_sync, cache_dir)
            took = time.perf_counter() - t0
            result = namespace["probe"](probes)
            result["_install_seconds"] = took
            result["_status"] = [line.split()[1] for line in open("/proc/self/status")
                                 if line.startswith("Seccomp_filters:")]
            os.write(wfd, json.dumps(result).encode())
            status = 0
        except BaseException as e:  # report, never return into pytest in the child
            os.write(wfd, json.dumps({"_error": repr(e)}).encode())
        finally:
            os._exit(status)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "_error" not in result, result["_error"]
    return result


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, full caps)")


@pytest.fixture(scope="module")
def default_run():
    return run_filtered()


# -- the policy as data --

def test_group_table_matches_systemd_252():
    assert set(seccomp.GROUPS) >= {"@default", "@sync", "@known", "@system-service", "@keyring"}
    assert seccomp.GROUPS["@sync"] == ("fdatasync", "fsync", "msync", "sync", "sync_file_range",
                                       "sync_file_range2", "syncfs")
    assert "@obsolete" in seccomp.GROUPS["@known"]
    assert set(seccomp.GROUPS) == set(seccomp.DESCRIPTIONS)


def test_nested_groups_expand_recursively():
    names = seccomp.expand("@system-service")
    assert "fsync" in names and "io_setup" in names and not any(n.startswith("@") for n in names)


def test_plan_adds_capability_gated_rows_only_with_their_capability():
    base, _, _ = seccomp.plan(DEFAULT_CAPS)
    assert "ptrace" in base and "reboot" in base and "vhangup" in base
    assert "settimeofday" not in base and "init_module" not in base and "syslog" not in base
    base, _, _ = seccomp.plan(DEFAULT_CAPS | {seccomp.CAP_SYS_TIME, seccomp.CAP_SYSLOG})
    assert "settimeofday" in base and "syslog" in base


def test_plan_leaves_out_what_nspawn_leaves_out():
    base, _, _ = seccomp.plan(set(range(41)))
    for name in ("bpf", "kexec_load", "add_key", "swapon", "perf_event_open", "quotactl",
                 "open_by_handle_at", "fanotify_init", "modify_ldt", "pkey_alloc"):
        assert name not in base


def test_deny_entries_match_by_spelling_like_nspawn():
    base, _, _ = seccomp.plan(DEFAULT_CAPS, deny=["@timer", "fsync"])
    assert "alarm" not in base and "fsync" not in base
    assert "times" in base          # also listed by @process
    assert "fdatasync" in base


def test_user_allow_list_adds_calls_and_reports_unknown_groups():
    _, extra, unknown = seccomp.plan(DEFAULT_CAPS, allow=["bpf", "@keyring", "@nope"],
                                     deny=["keyctl"])
    assert extra == ["bpf", "add_key", "request_key"]
    assert unknown == ["@nope"]


def test_unknown_group_warning_is_per_architecture():
    lines = seccomp.plan_warnings(["@nope"], [])
    assert lines[0].startswith("Failed to add rule for system call @nope on ")
    assert len(lines) == len(seccomp.LOCAL_ARCHS.get(os.uname().machine, ("native",)))


# -- the filter in a real process --

@needs_root
def test_calls_outside_the_allow_list_fail_with_eperm(default_run):
    for label in ("swapon", "kexec_load", "bpf", "add_key", "perf_event_open", "quotactl",
                  "open_by_handle_at", "fanotify_init"):
        assert default_run[label] == errno.EPERM, label


@needs_root
def test_capability_gated_calls_fail_without_their_capability(default_run):
    for label in ("clock_settime", "mlock", "init_module", "ioperm", "acct", "syslog"):
        assert default_run[label] == errno.EPERM, label


@needs_root
def test_allowed_calls_reach_the_kernel(default_run):
    assert default_run["mount"] == errno.EFAULT
    assert default_run["sethostname"] == errno.EINVAL
    assert default_run["setns"] == errno.EBADF
    assert default_run["splice"] == errno.EBADF
    assert default_run["ptrace"] == errno.ESRCH
    assert default_run["reboot"] == errno.EINVAL
    assert default_run["fsync"] == errno.EBADF
    assert default_run["fsync_pipe"] == errno.EINVAL
    assert default_run["open_dsync"] == errno.ENOENT
    assert default_run["times"] == 0 and default_run["alarm"] == 0
    assert default_run["netlink_route"] == 0


@needs_root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall number is x86-64's")
def test_calls_newer_than_the_known_table_fail_with_enosys(default_run):
    assert default_run["mseal"] == errno.ENOSYS


@needs_root
def test_netlink_audit_sockets_fail_with_eafnosupport(default_run):
    assert default_run["netlink_audit"] == errno.EAFNOSUPPORT


@needs_root
def test_filters_stack_like_nspawn(default_run):
    # x86, x32, x86-64 allow lists + audit masks for x32 and x86-64 (x86 multiplexes socket).
    if os.uname().machine == "x86_64":
        assert default_run["_status"] == ["5"]


@needs_root
def test_allow_list_entries_open_up_calls():
    r = run_filtered(allow=["bpf", "@swap"])
    assert r["bpf"] == errno.EINVAL
    assert r["swapon"] == errno.EFAULT


@needs_root
def test_capabilities_open_up_their_groups():
    r = run_filtered(caps=DEFAULT_CAPS | {seccomp.CAP_SYS_TIME, seccomp.CAP_SYS_PACCT})
    assert r["clock_settime"] in (errno.EINVAL, errno.EFAULT)
    assert r["acct"] == errno.EFAULT


@needs_root
def test_ptrace_needs_cap_sys_ptrace():
    assert run_filtered(caps=DEFAULT_CAPS - {19})["ptrace"] == errno.EPERM


@needs_root
def test_deny_list_makes_allowed_calls_fail_with_eperm():
    r = run_filtered(deny=["@timer", "sethostname", "@mount"])
    assert r["alarm"] == errno.EPERM
    assert r["sethostname"] == errno.EPERM
    assert r["mount"] == errno.EPERM
    assert r["times"] == 0           # still allowed through @process, as in nspawn


@needs_root
def test_deny_wins_over_allow():
    assert run_filtered(allow=["bpf"], deny=["bpf"])["bpf"] == errno.EPERM


@needs_root
def test_suppress_sync_turns_sync_calls_into_no_ops():
    r = run_filtered(suppress_sync=True)
    assert r["fsync_pipe"] == 0 and r["fdatasync_pipe"] == 0
    assert r["fsync"] == errno.EBADF and r["syncfs"] == errno.EBADF   # negative fds still fail
    assert r["open_dsync"] == errno.EINVAL
    assert r["openat2"] == errno.ENOSYS
    assert r["mount"] == errno.EFAULT


@needs_root
def test_suppress_sync_wins_over_a_denied_sync_group():
    assert run_filtered(deny=["@sync"], suppress_sync=True)["fsync_pipe"] == 0


@needs_root
def test_seccomp_disabled_by_environment_keeps_only_sync_suppression(monkeypatch):
    monkeypatch.setenv("SYSTEMD_SECCOMP", "0")
    r = run_filtered(suppress_sync=True)
    assert r["bpf"] == errno.EINVAL and r["fsync_pipe"] == 0


@needs_root
def test_cached_programs_behave_the_same(tmp_path):
    directory = str(tmp_path / "cache")
    first = run_filtered(allow=["bpf"], cache_dir=directory)
    assert len(os.listdir(directory)) == 1
    second = run_filtered(allow=["bpf"], cache_dir=directory)
    for r in (first, second):
        r.pop("_install_seconds")
    assert first == second
    run_filtered(allow=["bpf"], deny=["fsync"], cache_dir=directory)
    assert len(os.listdir(directory)) == 2


def test_untrusted_cache_is_ignored(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    key = cache.key(frozenset(), (), (), False, True)
    (directory / key).write_bytes(b"")
    assert cache.read(str(directory), key) is None


# -- against the real thing --

def _loaded_filters(pid: int) -> list[bytes]:
    """The seccomp programs of a process, oldest first (PTRACE_SECCOMP_GET_FILTER)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(16, pid, None, None) < 0:                          # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace attach")
    try:
        os.waitpid(pid, 0x40000000)                                   # __WALL
        programs = []
        while (n := libc.ptrace(0x420C, pid, len(programs), None)) > 0:
            buf = ctypes.create_string_buffer(n * 8)
            libc.ptrace(0x420C, pid, len(programs), buf)
            programs.append(buf.raw)
        return programs
    finally:
        libc.ptrace(17, pid, None, None)                              # PTRACE_DETACH


def _find_process(cmdline: bytes, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if Path(f"/proc/{entry}/cmdline").read_bytes() == cmdline:
                        return int(entry)
                except OSError:
                    pass
        time.sleep(0.02)
    raise AssertionError(f"no process {cmdline!r}")


def _nspawn_args(root: Path, options: dict) -> list[str]:
    args = ["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", str(root),
            "--bind-ro=/usr", f"--machine=sc-{os.getpid()}"]
    if options.get("allow"):
        args.append("--system-call-filter=" + " ".join(options["allow"]))
    if options.get("deny"):
        args.append("--system-call-filter=~" + " ".join(options["deny"]))
    if options.get("suppress_sync"):
        args.append("--suppress-sync=yes")
    if options.get("caps"):
        extra = sorted(options["caps"] - DEFAULT_CAPS)
        names = {14: "CAP_IPC_LOCK", 25: "CAP_SYS_TIME", 34: "CAP_SYSLOG"}
        args.append("--capability=" + ",".join(names[c] for c in extra))
    return args


NSPAWN_CASES = [
    {},
    {"allow": ["bpf", "@swap"]},
    {"deny": ["@timer", "sethostname"]},
    {"suppress_sync": True},
    {"deny": ["@sync"], "suppress_sync": True},
    {"caps": DEFAULT_CAPS | {14, 25, 34}},
]

needs_nspawn = [
    needs_root,
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="systemd-nspawn not installed"),
    pytest.mark.skipif(not os.path.islink("/bin"), reason="needs a merged-/usr host"),
]

def _nspawn_root(tmp: Path) -> Path:
    root = tmp / "root"
    for d in ("usr", "etc", "proc", "sys", "dev", "run", "tmp"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink("/" + link):
            os.symlink(os.readlink("/" + link), root / link)
    shutil.copy("/etc/os-release", root / "etc/os-release")
    return root


@pytest.mark.parametrize("options", NSPAWN_CASES)
def test_same_programs_as_systemd_nspawn(tmp_path, options):
    for mark in needs_nspawn:
        if mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    root = _nspawn_root(tmp_path)
    tag = str(100000 + secrets.randbelow(10**8))
    with ScratchCgroup("seccomp") as cg:  # nspawn 252 leaves payload/supervisor next to itself
        proc = subprocess.Popen([*_nspawn_args(root, options), "/usr/bin/sleep", tag],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=cg.enter)
        try:
            pid = _find_process(b"/usr/bin/sleep\0" + tag.encode() + b"\0")
            theirs = _loaded_filters(pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ours = seccomp.compile_filters(options.get("caps", DEFAULT_CAPS), options.get("allow", ()),
                                   options.get("deny", ()), options.get("suppress_sync", False))
    assert [len(p) // 8 for p in theirs] == [len(code) // 8 for code, _ in ours]
    assert theirs == [code for code, _ in ours]


@pytest.mark.parametrize("options", NSPAWN_CASES[:5])
def test_same_errno_as_systemd_nspawn(tmp_path, options):
    for mark in needs_nspawn:
        if mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    root = _nspawn_root(tmp_path)
    script = PROBE_SOURCE + f"\nprint(json.dumps(probe({PROBES!r})))\n"
    with ScratchCgroup("seccomp") as cg:
        proc = subprocess.run([*_nspawn_args(root, options), "/usr/bin/python3", "-c", script],
                              capture_output=True, text=True, timeout=60, preexec_fn=cg.enter)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = run_filtered(**options)
    for label, err in theirs.items():
        assert ours[label] == err, (label, ours[label], err)
