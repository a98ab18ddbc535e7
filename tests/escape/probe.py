"""Escape attempts made by root inside a container: the registry, helpers and run loop (the
attempts are in kernel.py, mounts.py and processes.py).

tests/test_escape.py copies this package into the guest tree as /escape and runs
``python3 -m escape GROUP`` from / under nspawnpy and under systemd-nspawn.  It reads /escape-config.json (facts about the host
that the test collected: namespace inodes, the canary file, a dummy process, ...) and tries every
attempt of GROUP in a forked child.  After each attempt it writes one JSON line to the
/escape-report fifo and waits for the test's acknowledgement on /escape-ack, so the test can
look at the host (and undo any damage) before the next attempt starts.

Every attempt ends in one of three outcomes:

* ``refused``  a defence of the container manager stopped it (seccomp, capabilities, a
  read-only or masked mount, a namespace, a device policy);
* ``reached``  it got past the container's defences but touched nothing of the host (the kernel
  refused bad arguments, or the effect stayed inside the container's own namespaces);
* ``escaped``  it changed or exposed something of the host.

Attempts that could harm the host if they succeeded only use harmless targets: sysctls are
written with their current value (or a value the test restores), time is set to "now",
kexec only unloads, the host disk is read but never written, reboot(2) only runs in a PID
namespace that is not the host's.  Imported by the test (for the ATTEMPTS table), it does
nothing.
"""

import ctypes
import errno
import json
import os
import select

REFUSED, REACHED, ESCAPED = "refused", "reached", "escaped"
RANK = {REFUSED: 0, REACHED: 1, ESCAPED: 2}
DENIALS = (errno.EPERM, errno.EACCES, errno.EROFS)

WORK = "/escape-work"
CONFIG = "/escape-config.json"
REPORT_FIFO = "/escape-report"
ACK_FIFO = "/escape-ack"
REBOOT_MARKER = "/escape-rebooted"
READ_ONLY_MARKER = "/escape-read-only-written"
PRINTK_BURST = "kernel/printk_ratelimit_burst"
KSM_PAGES = "kernel/mm/ksm/pages_to_scan"   # harmless while KSM is off
NS_TYPES = ("mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time")

# x86_64 system call numbers
NR = dict(personality=135, ptrace=101, iopl=172, ioperm=173, init_module=175, quotactl=179,
          acct=163, settimeofday=164, mount=165, umount2=166, swapon=167, reboot=169,
          kexec_load=246, add_key=248, keyctl=250, clock_settime=227, unshare=272,
          perf_event_open=298, name_to_handle_at=303, open_by_handle_at=304, setns=308,
          finit_module=313, kexec_file_load=320, bpf=321, userfaultfd=323, pivot_root=155,
          pidfd_send_signal=424, pidfd_open=434)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
# cgroup, uts, ipc, pid, net, mnt, time
ALL_BUT_USER_NS = 0x02000000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000 | CLONE_NEWNS | 0x80

ATTEMPTS = {}   # name -> Attempt (the test parametrizes over this table)


class Attempt:
    def __init__(self, fn, groups):
        self.name, self.fn, self.groups = fn.__name__, fn, groups
        self.doc = " ".join((fn.__doc__ or "").split())


def attempt(*groups):
    """Register an escape attempt; *groups* are the container runs it is made in."""
    def register(fn):
        ATTEMPTS[fn.__name__] = Attempt(fn, groups or ("main",))
        return fn
    return register


# ---------------------------------------------------------------------------------------------
# helpers

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _arg(a):
    if isinstance(a, int):
        return ctypes.c_long(a)
    if isinstance(a, str):
        return ctypes.c_char_p(a.encode())
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    return a


def sc(name, *args):
    """Make system call *name*; return (result, errno) with errno 0 on success."""
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(NR[name]), *map(_arg, args))
    return r, (ctypes.get_errno() if r == -1 else 0)


def verdict(err, success=ESCAPED, denials=DENIALS):
    """Outcome of a call that failed with *err* (0: it succeeded, worth *success*)."""
    if err == 0:
        return success
    return REFUSED if err in denials else REACHED


HIDDEN = DENIALS + (errno.ESRCH,)   # a PID namespace hides the target


def contained(err):
    """(outcome, detail) of a call whose success stays inside the container's namespaces."""
    return verdict(err, REACHED), errname(err)


def worst(*outcomes):
    return max(outcomes, key=RANK.__getitem__) if outcomes else REFUSED


def errname(err):
    return "ok" if err == 0 else errno.errorcode.get(err, str(err))


def try_os(fn, *args):
    """Run an os-level call; return (value, errno)."""
    try:
        return fn(*args), 0
    except OSError as e:
        return None, e.errno


def write_file(path, data):
    """Write *data* to an existing file; return the errno (0 on success)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        return e.errno
    try:
        os.write(fd, data.encode() if isinstance(data, str) else data)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def read_file(path, size=4096):
    try:
        with open(path, "rb") as f:
            return f.read(size).decode(errors="replace")
    except OSError:
        return None


def mount(source, target, fstype, flags=0, data=None):
    return sc("mount", source or 0, target, fstype or 0, flags, data or 0)[1]


def private_mount_ns():
    """Give the calling (forked) attempt its own mount namespace, so what it mounts or
    unmounts does not change the container for the attempts after it.  Same user namespace,
    so no mount gets locked that was not locked before."""
    sc("unshare", CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def same_file(st, ident):
    return ident is not None and [st.st_dev, st.st_ino] == list(ident)


def canary_reachable_at(path, cfg):
    """True if *path* is the host's canary file; if so, append a line to it (the test sees it)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not same_file(st, cfg["canary_id"]):
        return False
    write_canary_at(path)
    return True


def write_canary_at(path, dir_fd=None):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        os.write(fd, f"written by {CURRENT}\n".encode())
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def host_canary_visible(cfg):
    return canary_reachable_at(cfg["canary"], cfg)


def mknod_anywhere(name, mode, dev):
    """Make a device node where an attacker would: the tree's own file system first (no nodev),
    then /dev and /tmp.  Return (path, errno of the last failure)."""
    last = errno.ENOENT
    for d in (WORK, "/dev", "/tmp", "/run"):
        path = os.path.join(d, f"escape-{name}")
        try:
            if os.path.lexists(path):
                os.unlink(path)
            os.mknod(path, mode, dev)
            return path, 0
        except OSError as e:
            last = e.errno
    return None, last


def open_device(name, mode, dev, flags):
    """mknod + open; (fd or None, detail, outcome-if-failed)."""
    path, err = mknod_anywhere(name, mode, dev)
    if path is None:
        return None, f"mknod: {errname(err)}", verdict(err, REACHED)
    try:
        return os.open(path, flags | os.O_CLOEXEC), f"mknod ok at {path}", None
    except OSError as e:
        return None, f"mknod ok at {path}, open: {errname(e.errno)}", verdict(e.errno, REACHED)
    finally:
        os.unlink(path)


def sysctl_value(proc, knob):
    return read_file(f"{proc}/sys/{knob}")


def write_global_knobs(cfg, proc="/proc", sys_="/sys"):
    """Try the two harmless host-wide knobs the test watches, writing this run's own value
    (so that concurrent runs do not take each other's writes for their own; the test restores
    them).  Return (outcome, detail)."""
    details, outcomes = [], []
    for path in (f"{proc}/sys/{PRINTK_BURST}", f"{sys_}/{KSM_PAGES}"):
        if read_file(path) is not None:
            err = write_file(path, str(cfg["knob_value"]))
            details.append(f"{path}: {errname(err)}")
            outcomes.append(verdict(err))
    return worst(*outcomes), "; ".join(details) or "no knob found"


def own_ns(ns):
    try:
        st = os.stat(f"/proc/self/ns/{ns}")
        return [st.st_dev, st.st_ino]
    except OSError:
        return None


def in_host_pid_ns(cfg):
    return own_ns("pid") == cfg["host_ns"].get("pid")


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]


def climb_out():
    for _ in range(64):
        os.chdir("..")


def mountinfo():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            unescape = lambda s: s.encode().decode("unicode_escape")   # noqa: E731
            yield fields[2], unescape(fields[3]), unescape(fields[4])


def describe_fd(path):
    try:
        return os.readlink(path)
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
# the run

CURRENT = "-"
INHERITED = []
PROBE_PID = os.getpid()
_report = _ack = None


def report(name, outcome, detail, wait=True):
    os.write(_report, (json.dumps({"attempt": name, "outcome": outcome, "detail": detail})
                       + "\n").encode())
    if wait:
        select.select([_ack], [], [], 60)
        os.read(_ack, 1)


def run_one(att, cfg):
    """Run *att* in a forked child (so what it changes about itself stays there)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = att.fn(cfg)
        except BaseException as e:  # noqa: BLE001 - report what broke, from the child
            result = (REFUSED, f"probe error: {type(e).__name__}: {e}")
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 20)
    data = os.read(r, 65536) if ready else b""
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(r)
    return json.loads(data) if data else (REFUSED, "probe error: no answer")


def main(group, only=()):
    """Make the attempts of *group* (with group "control": the attempts named in *only*,
    which the test makes without any container to show that the probe sees escapes)."""
    global CURRENT, _report, _ack
    listed = [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2]
    INHERITED.extend(n for n in listed if try_os(os.fstat, n)[1] == 0)   # not listdir's own
    with open(CONFIG) as f:
        cfg = json.load(f)
    _report = os.open(REPORT_FIFO, os.O_WRONLY | os.O_CLOEXEC)
    _ack = os.open(ACK_FIFO, os.O_RDONLY | os.O_CLOEXEC)
    INHERITED[:] = [n for n in INHERITED if n not in (_report, _ack)]
    os.makedirs(WORK, exist_ok=True)
    for att in ATTEMPTS.values():
        if group not in att.groups and att.name not in only:
            continue
        CURRENT = att.name
        if group.startswith("reboot"):
            outcome, detail = att.fn(cfg)
        else:
            outcome, detail = run_one(att, cfg)
        report(att.name, outcome, detail)
    report("END", REFUSED, "", wait=False)
    # leave PID 1 alone in the container: processes an attempt started die with us
    return 0
