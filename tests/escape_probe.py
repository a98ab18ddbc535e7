"""Escape attempts made by root inside a container (tests/test_escape.py runs this file there).

Copied into the guest tree as /escape-probe.py and run as ``python3 /escape-probe.py GROUP``
under nspawnpy and under systemd-nspawn.  It reads /escape-config.json (facts about the host
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
namespace that is not the host's.  Imported by the test (for the ATTEMPTS table), it does nothing.
"""

import ctypes
import errno
import fcntl
import json
import os
import select
import socket
import struct
import sys
import termios
import time

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
RCU_EXPEDITED = "kernel/rcu_expedited"
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


def write_global_knobs(proc="/proc", sys_="/sys"):
    """Try the two harmless host-wide knobs the test watches (it restores them).
    Return (outcome, detail)."""
    details, outcomes = [], []
    burst = sysctl_value(proc, PRINTK_BURST)
    if burst is not None:
        err = write_file(f"{proc}/sys/{PRINTK_BURST}", str(int(burst) + 1))
        details.append(f"{PRINTK_BURST}: {errname(err)}")
        outcomes.append(verdict(err))
    rcu = read_file(f"{sys_}/{RCU_EXPEDITED}")
    if rcu is not None:
        err = write_file(f"{sys_}/{RCU_EXPEDITED}", "0" if rcu.strip() == "1" else "1")
        details.append(f"{RCU_EXPEDITED}: {errname(err)}")
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


# ---------------------------------------------------------------------------------------------
# kernel modules, raw devices, kernel log


@attempt()
def init_module(cfg):
    """init_module(2) with a fake module image"""
    image = b"\x7fELF" + bytes(60)
    r, err = sc("init_module", image, len(image), "")
    return verdict(err), errname(err)


@attempt()
def finit_module(cfg):
    """finit_module(2) of a file that is not a module"""
    fd = os.open("/etc/os-release", os.O_RDONLY | os.O_CLOEXEC)
    r, err = sc("finit_module", fd, "", 0)
    return verdict(err), errname(err)


@attempt()
def usermode_helper_sysctls(cfg):
    """write kernel.core_pattern and kernel.modprobe (host-wide helpers run as host root)
    with their own values"""
    outcomes, details = [], []
    for knob in ("kernel/core_pattern", "kernel/modprobe"):
        value = sysctl_value("/proc", knob)
        if value is not None:
            err = write_file(f"/proc/sys/{knob}", value)
            outcomes.append(verdict(err))
            details.append(f"{knob}: {errname(err)}")
    return worst(*outcomes), "; ".join(details) or "none readable"


def use_device(name, mode, dev, flags, use):
    """mknod + open + *use*(fd): escaped if all of it works."""
    fd, detail, failed = open_device(name, mode, dev, flags)
    if fd is None:
        return failed, detail
    try:
        use(fd)
        return ESCAPED, detail + ", used it"
    except OSError as e:
        return REACHED, detail + f", use: {errname(e.errno)}"
    finally:
        os.close(fd)


@attempt()
def dev_mem_read(cfg):
    """mknod /dev/mem (c 1:1) and read it"""
    return use_device("mem", 0o20600, os.makedev(1, 1), os.O_RDONLY,
                      lambda fd: os.pread(fd, 16, 0))


@attempt()
def dev_kmsg_write(cfg):
    """write a marker to the container's /dev/kmsg (escaped if it lands in the host's log)"""
    err = write_file("/dev/kmsg", f"nspawnpy-escape-{cfg['token']} {CURRENT}\n")
    return contained(err)


@attempt()
def mknod_kmsg_write(cfg):
    """mknod the kernel log device (c 1:11) and write a marker to it"""
    marker = f"nspawnpy-escape-{cfg['token']} {CURRENT}\n".encode()
    return use_device("kmsg", 0o20600, os.makedev(1, 11), os.O_WRONLY,
                      lambda fd: os.write(fd, marker))


@attempt()
def host_disk_read(cfg):
    """mknod the host's root block device and read its first sector"""
    major, minor = cfg["host_disk"]
    return use_device("disk", 0o60600, os.makedev(major, minor), os.O_RDONLY,
                      lambda fd: os.pread(fd, 512, 0))


@attempt()
def host_disk_mount(cfg):
    """mknod the host's root block device, mount it and append to the host's canary file"""
    private_mount_ns()
    major, minor = cfg["host_disk"]
    path, err = mknod_anywhere("disk", 0o60600, os.makedev(major, minor))
    if path is None:
        return verdict(err, REACHED), f"mknod: {errname(err)}"
    target = os.path.join(WORK, "hostfs")
    os.makedirs(target, exist_ok=True)
    err = mount(path, target, cfg["host_fstype"], 0)
    os.unlink(path)
    if err:
        return verdict(err, REACHED), f"mknod ok, mount: {errname(err)}"
    wrote = canary_reachable_at(target + cfg["canary_rel"], cfg)
    sc("umount2", target, MNT_DETACH)
    return ESCAPED, f"mounted the host disk; canary written: {wrote}"


# ---------------------------------------------------------------------------------------------
# /proc/sys, /sys, sysrq


@attempt()
def proc_sys_global_write(cfg):
    """write host-wide knobs: kernel.printk_ratelimit_burst and /sys/kernel/rcu_expedited"""
    return write_global_knobs()


@attempt()
def proc_sys_hostname(cfg):
    """write kernel.hostname through /proc/sys (escaped if the host's name changes)"""
    err = write_file("/proc/sys/kernel/hostname", f"esc-{cfg['token']}")
    return contained(err)


@attempt()
def sethostname(cfg):
    """sethostname(2) (escaped if the host's name changes)"""
    _, err = try_os(socket.sethostname, f"esc-{cfg['token']}")
    return contained(err)


@attempt()
def sys_kernel_write(cfg):
    """write /sys/kernel/rcu_expedited (a host-wide knob)"""
    rcu = read_file("/sys/" + RCU_EXPEDITED)
    if rcu is None:
        return REFUSED, "not readable"
    err = write_file("/sys/" + RCU_EXPEDITED, "0" if rcu.strip() == "1" else "1")
    return verdict(err), errname(err)


@attempt()
def sysrq_trigger(cfg):
    """write 'h' (help: harmless) to /proc/sysrq-trigger"""
    err = write_file("/proc/sysrq-trigger", "h")
    return verdict(err), errname(err)


@attempt()
def proc_mount_fresh_rw(cfg):
    """mount a new proc instance and write host-wide sysctls through it"""
    private_mount_ns()
    target = os.path.join(WORK, "proc")
    os.makedirs(target, exist_ok=True)
    err = mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if err:
        return verdict(err, REACHED), f"mount: {errname(err)}"
    outcome, detail = write_global_knobs(proc=target)
    return worst(REACHED, outcome), "mount ok; " + detail


@attempt()
def sysfs_mount_fresh_rw(cfg):
    """mount a new sysfs instance read-write and write /sys/kernel/rcu_expedited through it"""
    private_mount_ns()
    target = os.path.join(WORK, "sys")
    os.makedirs(target, exist_ok=True)
    err = mount("sysfs", target, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if err:
        return verdict(err, REACHED), f"mount: {errname(err)}"
    outcome, detail = write_global_knobs(proc="/nonexistent", sys_=target)
    return worst(REACHED, outcome), "mount ok; " + detail


def remount_rw(path):
    return mount(None, path, None, MS_REMOUNT | MS_BIND)


@attempt()
def remount_proc_sys_rw(cfg):
    """remount /proc/sys read-write, then write host-wide sysctls"""
    private_mount_ns()
    err = remount_rw("/proc/sys")
    outcome, detail = write_global_knobs()
    return worst(verdict(err, REACHED), outcome), f"remount: {errname(err)}; {detail}"


@attempt()
def remount_sys_rw(cfg):
    """remount /sys read-write, then write /sys/kernel/rcu_expedited"""
    private_mount_ns()
    err = remount_rw("/sys")
    outcome, detail = write_global_knobs(proc="/nonexistent")
    return worst(verdict(err, REACHED), outcome), f"remount: {errname(err)}; {detail}"


@attempt()
def remount_bind_ro_rw(cfg):
    """remount the --bind-ro host directory read-write and write to a world-writable file in it"""
    private_mount_ns()
    err = remount_rw("/escape-host")
    wrote = write_file("/escape-host/world-writable", f"written by {CURRENT}\n")
    return worst(verdict(err, REACHED), verdict(wrote)), \
        f"remount: {errname(err)}, write: {errname(wrote)}"


@attempt("readonly")
def remount_read_only_root_rw(cfg):
    """with --read-only, remount / read-write and write to the tree"""
    private_mount_ns()
    err = remount_rw("/")
    _, wrote = try_os(os.open, READ_ONLY_MARKER, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    return worst(verdict(err, REACHED), verdict(wrote)), \
        f"remount: {errname(err)}, write: {errname(wrote)}"


@attempt()
def umount_proc_masks(cfg):
    """unmount what covers /proc/sys, /proc/sysrq-trigger, /proc/kcore, then use them"""
    private_mount_ns()
    details = []
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/kcore"):
        for _ in range(4):   # masks may be stacked
            _, err = sc("umount2", path, MNT_DETACH)
            if err:
                break
            details.append(f"umount {path}")
    outcome, knobs = write_global_knobs()
    outcomes = [outcome]
    err = write_file("/proc/sysrq-trigger", "h")
    outcomes.append(verdict(err))
    try:
        with open("/proc/kcore", "rb") as f:
            f.read(16)
        outcomes.append(ESCAPED)
        details.append("kcore read")
    except OSError as e:
        details.append(f"kcore: {errname(e.errno)}")
    return worst(*outcomes), "; ".join(details + [knobs, f"sysrq: {errname(err)}"])


@attempt()
def unshare_userns_mount_tricks(cfg):
    """unshare a user+mount namespace, then remount/unmount/mount proc and sysfs to write
    host-wide knobs"""
    uid, gid = os.getuid(), os.getgid()
    _, err = sc("unshare", CLONE_NEWUSER | CLONE_NEWNS)
    if err:
        return verdict(err, REACHED), f"unshare: {errname(err)}"
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"0 {uid} 1")
    write_file("/proc/self/gid_map", f"0 {gid} 1")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    steps = {"remount /proc/sys": remount_rw("/proc/sys"),
             "remount /sys": remount_rw("/sys"),
             "umount /proc/sys": sc("umount2", "/proc/sys", MNT_DETACH)[1]}
    os.makedirs(WORK + "/uproc", exist_ok=True)
    os.makedirs(WORK + "/usys", exist_ok=True)
    steps["mount proc"] = mount("proc", WORK + "/uproc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    steps["mount sysfs"] = mount("sysfs", WORK + "/usys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    outcomes = [write_global_knobs()[0],
                write_global_knobs(WORK + "/uproc", WORK + "/usys")[0]]
    detail = ", ".join(f"{k}: {errname(v)}" for k, v in steps.items())
    return worst(*outcomes), detail


# ---------------------------------------------------------------------------------------------
# file handles, chroot, pivot_root, what the mount table exposes


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]


def open_handle(handle_type, raw, flags):
    h = FileHandle(len(raw), handle_type)
    ctypes.memmove(h.f_handle, raw, len(raw))
    mount_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        r, err = sc("open_by_handle_at", mount_fd, ctypes.byref(h), flags)
        return (r if r >= 0 else None), err
    finally:
        os.close(mount_fd)


@attempt()
def open_by_handle_fs_root(cfg):
    """guess the handle of the host file system's root (inode 2, as "shocker" did) and open
    the host's canary through it"""
    fd, err = open_handle(1, struct.pack("=II", 2, 0), os.O_RDONLY | os.O_DIRECTORY)
    if fd is None:
        return verdict(err, REACHED), f"open_by_handle_at: {errname(err)}"
    try:
        is_host_root = same_file(os.fstat(fd), cfg["host_fsroot_id"])
        wrote = write_canary_at(cfg["canary_rel"].lstrip("/"), dir_fd=fd)
        return (ESCAPED if is_host_root or wrote else REACHED), f"opened; canary written: {wrote}"
    finally:
        os.close(fd)


@attempt()
def name_to_handle_and_open_host_file(cfg):
    """name_to_handle_at(2) works on the tree; open_by_handle_at(2) with the handle of the
    host's canary file (made on the host)"""
    h = FileHandle(128, 0)
    mount_id = ctypes.c_int()
    _, err_name = sc("name_to_handle_at", -100, "/etc/os-release", ctypes.byref(h),
                     ctypes.byref(mount_id), 0)
    handle_type, raw = cfg["canary_handle"]
    fd, err = open_handle(handle_type, bytes.fromhex(raw), os.O_WRONLY | os.O_APPEND)
    detail = f"name_to_handle_at: {errname(err_name)}, open_by_handle_at: {errname(err)}"
    if fd is None:
        return verdict(err, REACHED), detail
    try:
        os.write(fd, f"written by {CURRENT}\n".encode())
    finally:
        os.close(fd)
    return ESCAPED, detail


def seen_host(cfg):
    if host_canary_visible(cfg):
        return ESCAPED, "host canary visible"
    return REFUSED, "host canary not visible"


def climb_out():
    for _ in range(64):
        os.chdir("..")


@attempt()
def chroot_break_classic(cfg):
    """chroot into a subdirectory, chdir .. past it, chroot(".") and look for the host"""
    jail = os.path.join(WORK, "jail")
    os.makedirs(jail, exist_ok=True)
    _, err = try_os(os.chroot, jail)
    if err:
        return verdict(err, REACHED), f"chroot: {errname(err)}"
    climb_out()
    os.chroot(".")
    return seen_host(cfg)


@attempt()
def chroot_break_fd(cfg):
    """keep a directory fd of /, chroot elsewhere, fchdir back and climb out"""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    jail = os.path.join(WORK, "jail")
    os.makedirs(jail, exist_ok=True)
    os.chroot(jail)
    os.fchdir(fd)
    climb_out()
    os.chroot(".")
    return seen_host(cfg)


@attempt()
def pivot_root_back(cfg):
    """pivot_root(".", ".") and detach the old root, climb .., look for the host"""
    private_mount_ns()
    os.chdir("/")
    _, err = sc("pivot_root", ".", ".")
    if err == 0:
        sc("umount2", ".", MNT_DETACH)
        os.chdir("/")
    climb_out()
    seen = host_canary_visible(cfg)
    return (ESCAPED if seen else verdict(err, REACHED)), f"pivot_root: {errname(err)}"


def mountinfo():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            unescape = lambda s: s.encode().decode("unicode_escape")   # noqa: E731
            yield fields[2], unescape(fields[3]), unescape(fields[4])


@attempt()
def host_fs_reachable_in_mount_table(cfg):
    """a mount of the host's file system whose subtree holds the host canary"""
    major, minor = cfg["host_disk"]
    rel = cfg["canary_rel"]
    for devno, root, mountpoint in mountinfo():
        if devno != f"{major}:{minor}":
            continue
        if rel == root or rel.startswith(root.rstrip("/") + "/"):
            path = mountpoint.rstrip("/") + rel[len(root.rstrip("/")):]
            if canary_reachable_at(path, cfg):
                return ESCAPED, f"canary at {path}"
    return REFUSED, "no mount exposes it"


# ---------------------------------------------------------------------------------------------
# processes and namespaces


def ours(pid):
    """Is *pid* a process we can see (in the container's PID namespace)?"""
    return os.path.exists(f"/proc/{pid}")


def foreign_pids():
    """PIDs that answer kill(pid, 0) but are not in our /proc: processes outside."""
    pid_max = int(read_file("/proc/sys/kernel/pid_max") or 32768)
    return [p for p in range(2, min(pid_max, 1 << 16)) if try_os(os.kill, p, 0)[1] in
            (0, errno.EPERM) and not ours(p)]


@attempt()
def ptrace_host_pid(cfg):
    """PTRACE_ATTACH to the host's dummy process by its host PID (unless that number is one
    of ours)"""
    pid = cfg["dummy_pid"]
    if ours(pid) and cfg["token"] not in (read_file(f"/proc/{pid}/cmdline") or ""):
        return REFUSED, "the number is a process of the container"
    r, err = sc("ptrace", 16, pid, 0, 0)
    if err == 0:
        os.waitpid(pid, 0x40000000)  # __WALL
        sc("ptrace", 17, pid, 0, 0)
    return verdict(err, ESCAPED, HIDDEN), errname(err)


@attempt()
def kill_host_pid(cfg):
    """kill(2) and pidfd_send_signal(2) the host's dummy process by its host PID, and guess
    PIDs: kill(pid, 0) for every PID up to 65536"""
    pid = cfg["dummy_pid"]
    foreign = foreign_pids()
    if ours(pid) and cfg["token"] not in (read_file(f"/proc/{pid}/cmdline") or ""):
        return (ESCAPED if foreign else REFUSED), f"foreign PIDs: {foreign[:10]}"
    _, err = try_os(os.kill, pid, 9)
    fd, err_pidfd = sc("pidfd_open", pid, 0)
    if fd >= 0:
        err_pidfd = sc("pidfd_send_signal", fd, 9, 0, 0)[1]
    outcome = worst(verdict(err, denials=HIDDEN), verdict(err_pidfd, denials=HIDDEN),
                    ESCAPED if foreign else REFUSED)
    return outcome, f"kill: {errname(err)}, pidfd: {errname(err_pidfd)}, foreign PIDs: {foreign[:10]}"


@attempt()
def kill_every_process(cfg):
    """kill(-1, SIGKILL) (the host's dummy process must survive)"""
    if in_host_pid_ns(cfg) or os.getppid() != 1:
        return (ESCAPED, "in the host's PID namespace") if in_host_pid_ns(cfg) else \
               (REFUSED, "skipped: the probe is not PID 1")
    _, err = try_os(os.kill, -1, 9)
    return contained(err)


def host_namespaces_not_joined(cfg):
    """{type: [dev, ino]} of the host namespaces this process is not already in."""
    return {t: ident for t, ident in cfg["host_ns"].items() if ident and own_ns(t) != ident}


@attempt()
def setns_proc_ns(cfg):
    """setns(2) into a host namespace found in /proc/*/ns of any visible process"""
    wanted = host_namespaces_not_joined(cfg)
    found, joined = [], []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        for t, ident in wanted.items():
            path = f"/proc/{pid}/ns/{t}"
            st, _ = try_os(os.stat, path)
            if st is None or not same_file(st, ident):
                continue
            found.append(path)
            fd, err = try_os(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
            if fd is not None and sc("setns", fd, 0)[1] == 0:
                joined.append(path)
    if joined:
        return ESCAPED, f"joined {joined}"
    return (REACHED if found else REFUSED), f"host namespaces visible: {found}"


@attempt()
def setns_pidfd(cfg):
    """pidfd_open(2) every visible process and setns(2) into all its namespaces at once"""
    wanted = host_namespaces_not_joined(cfg)
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        fd, err = sc("pidfd_open", pid, 0)
        if fd < 0:
            continue
        # every namespace type but user (the caller has no caps over a parent user ns)
        sc("setns", fd, ALL_BUT_USER_NS)
        os.close(fd)
    joined = [t for t, ident in wanted.items() if own_ns(t) == ident]
    return (ESCAPED if joined else REFUSED), f"host namespaces joined: {joined}"


def describe_fd(path):
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def host_object_behind(fd_path, cfg):
    """(outcome, what) for an fd of another process or ours that the container inherited."""
    st, err = try_os(os.stat, fd_path)
    if st is None:
        return REACHED, describe_fd(fd_path)
    target = describe_fd(fd_path)
    for t, ident in cfg["host_ns"].items():
        if ident and same_file(st, ident) and own_ns(t) != ident:
            return ESCAPED, f"{target} (host {t} namespace)"
    if any(same_file(st, b[:2]) for b in cfg["host_binaries"]):
        return ESCAPED, f"{target} (host binary)"
    if target.startswith("anon_inode:[pidfd]"):
        return ESCAPED, f"{target} (pidfd of a process outside)"
    if os.path.isdir(fd_path):
        try:
            os.chdir(fd_path)
            climb_out()
            if canary_reachable_at(cfg["canary"].lstrip("/"), cfg):
                return ESCAPED, f"{target} (directory leading to the host's root)"
        except OSError:
            pass
    return REACHED, target


@attempt("main", "stub")
def inherited_fds(cfg):
    """file descriptors the container inherited from the caller or the manager (the test passes
    a directory fd of the host's / to the tool): climb out through them"""
    leaked = [f"/proc/self/fd/{n}" for n in INHERITED]
    if PROBE_PID != 1 and not in_host_pid_ns(cfg):   # our PID 1 (a stub init) may hold some
        leaked += [f"/proc/1/fd/{n}" for n in (try_os(os.listdir, "/proc/1/fd")[0] or [])
                   if int(n) > 2]
    results = [host_object_behind(p, cfg) for p in leaked]
    return worst(*(o for o, _ in results)), f"fds: {[w for _, w in results]}"


@attempt("main", "stub")
def exe_host_binary(cfg):
    """CVE-2019-5736: a visible process (or fd) whose executable is a host binary (the
    manager's python, systemd-nspawn): open it for writing (nothing is written)"""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        st, _ = try_os(os.stat, f"/proc/{pid}/exe")
        if st is not None and any(same_file(st, b[:2]) for b in cfg["host_binaries"]):
            found.append(f"/proc/{pid}/exe")
    writable = []
    for path in found:
        fd, err = try_os(os.open, path, os.O_WRONLY | os.O_CLOEXEC)
        if fd is not None:
            os.close(fd)
            writable.append(path)
        elif err == errno.ETXTBSY:
            # the classic attack: keep an O_PATH fd and reopen it once the process is gone
            pass
    if writable:
        return ESCAPED, f"writable host binary: {writable}"
    return (REACHED if found else REFUSED), f"host binaries visible: {found}"


@attempt("main", "stub")
def map_files_host_library(cfg):
    """open for writing (nothing is written) a file mapped by a visible process that is not
    the container's file of that name: a host library of a stub init, via /proc/PID/map_files"""
    found, writable = [], []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        entries, _ = try_os(os.listdir, f"/proc/{pid}/map_files")
        for entry in entries or ():
            link = f"/proc/{pid}/map_files/{entry}"
            st, _ = try_os(os.stat, link)
            name = describe_fd(link)
            mine, _ = try_os(os.stat, name)
            if st is None or (mine is not None and same_file(mine, [st.st_dev, st.st_ino])):
                continue
            found.append(name)
            fd, _ = try_os(os.open, link, os.O_WRONLY | os.O_CLOEXEC)
            if fd is not None:
                os.close(fd)
                writable.append(name)
    if writable:
        return ESCAPED, f"writable: {sorted(set(writable))}"
    return (REACHED if found else REFUSED), f"foreign mapped files: {sorted(set(found))}"


# ---------------------------------------------------------------------------------------------
# keys, bpf, perf, kexec, reboot, time


@attempt()
def keyctl_host_keyring(cfg):
    """read the host root's user keyring (the test put a key there) and add a key to it"""
    KEY_SPEC_USER_KEYRING = -4
    r, err = sc("keyctl", 10, KEY_SPEC_USER_KEYRING, "user", cfg["key_desc"], 0)   # SEARCH
    outcome = ESCAPED if err == 0 else verdict(err, REACHED)
    payload = b"planted"
    _, err_add = sc("add_key", "user", cfg["key_planted"], payload, len(payload),
                    KEY_SPEC_USER_KEYRING)
    # a key in the container's own keyring is no escape; the test looks for it on the host
    outcome = worst(outcome, REACHED if err_add == 0 else verdict(err_add))
    return outcome, f"search: {errname(err)}, add_key: {errname(err_add)}"


@attempt()
def bpf_map_create(cfg):
    """bpf(BPF_MAP_CREATE) of a one-entry array map"""
    attr = struct.pack("=IIII", 2, 4, 4, 1) + bytes(112)
    fd, err = sc("bpf", 0, attr, len(attr))
    if fd >= 0:
        os.close(fd)
    return verdict(err), errname(err)


@attempt()
def perf_event_open_system_wide(cfg):
    """perf_event_open(2) of a CPU clock counter for every process on CPU 0"""
    attr = struct.pack("=IIQ", 1, 128, 0) + bytes(112)
    fd, err = sc("perf_event_open", attr, -1, 0, -1, 0)
    if fd >= 0:
        os.close(fd)
    return verdict(err), errname(err)


@attempt()
def kexec_unload(cfg):
    """kexec_load(2) and kexec_file_load(2) with nothing to load (that unloads: harmless)"""
    _, err = sc("kexec_load", 0, 0, 0, 0)
    _, err_file = sc("kexec_file_load", -1, -1, 0, 0, 1)   # KEXEC_FILE_UNLOAD
    return worst(verdict(err), verdict(err_file)), f"{errname(err)}, {errname(err_file)}"


LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2 = 0xfee1dead, 672274793


@attempt()
def reboot_cad_off(cfg):
    """reboot(LINUX_REBOOT_CMD_CAD_OFF) (host-wide Ctrl-Alt-Del setting)"""
    if in_host_pid_ns(cfg):
        return ESCAPED, "in the host's PID namespace: not tried"
    _, err = sc("reboot", LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0, 0)
    return verdict(err), errname(err)


def reboot_container(cfg, cmd):
    """reboot(2) for real: only ends the container's PID namespace.  Never called in the host's
    PID namespace; a marker in the tree stops an in-place restart from looping."""
    if in_host_pid_ns(cfg) or os.getpid() != 1:
        return ESCAPED if in_host_pid_ns(cfg) else REFUSED, "not tried: not PID 1 of a PID ns"
    if os.path.exists(REBOOT_MARKER):
        return REFUSED, "restarted in place"
    with open(REBOOT_MARKER, "w") as f:
        f.write("1")
    report(CURRENT, REACHED, "calling reboot(2)", wait=False)
    _, err = sc("reboot", LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, cmd, 0)
    return verdict(err, REACHED), f"reboot returned: {errname(err)}"


@attempt("reboot-poweroff")
def reboot_power_off(cfg):
    """reboot(LINUX_REBOOT_CMD_POWER_OFF): must end only the container"""
    return reboot_container(cfg, 0x4321FEDC)


@attempt("reboot-restart")
def reboot_restart(cfg):
    """reboot(LINUX_REBOOT_CMD_RESTART): must end only the container"""
    return reboot_container(cfg, 0x01234567)


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@attempt()
def clock_settime_realtime(cfg):
    """clock_settime(CLOCK_REALTIME) to the current time"""
    now = time.time()
    ts = Timespec(int(now), int((now % 1) * 1e9))
    _, err = sc("clock_settime", 0, ctypes.byref(ts))
    return verdict(err), errname(err)


@attempt()
def settimeofday_now(cfg):
    """settimeofday(2) to the current time"""
    now = time.time()
    tv = Timespec(int(now), int((now % 1) * 1e6))
    _, err = sc("settimeofday", ctypes.byref(tv), 0)
    return verdict(err), errname(err)


# ---------------------------------------------------------------------------------------------
# cgroups


def cgroup_mount_candidates():
    """Fresh mounts of every cgroup hierarchy (v1 controllers, name=systemd, cgroup2) and the
    ones in the container's view; yields (hierarchy key, path of its root as we see it)."""
    for line in (read_file("/proc/cgroups") or "").splitlines()[1:]:
        name, hierarchy, _, enabled = line.split()
        if hierarchy != "0" and enabled == "1":
            yield from fresh_cgroup_mount(name, "cgroup", name)
    yield from fresh_cgroup_mount("name=systemd", "cgroup", "none,name=systemd")
    yield from fresh_cgroup_mount("", "cgroup2", None)
    for _, _, mountpoint in mountinfo():
        if mountpoint.startswith("/sys/fs/cgroup"):
            yield "view", mountpoint


def fresh_cgroup_mount(key, fstype, options):
    target = os.path.join(WORK, "cg-" + (key.replace("=", "-") or "unified"))
    os.makedirs(target, exist_ok=True)
    if mount("cgroup", target, fstype, 0, options) == 0:
        yield key, target


@attempt()
def cgroup_release_agent(cfg):
    """write release_agent (run as host root when a cgroup empties) of every cgroup v1
    hierarchy we can see or mount, with its own value"""
    private_mount_ns()
    tried, written = [], []
    for _, root in cgroup_mount_candidates():
        path = os.path.join(root, "release_agent")
        value = read_file(path)
        if value is None:
            continue
        err = write_file(path, value if value.strip() else "\n")
        tried.append(f"{path}: {errname(err)}")
        if err == 0:
            written.append(path)
    if written:
        return ESCAPED, f"written: {written}"
    return (REACHED if tried else REFUSED), "; ".join(tried) or "no release_agent visible"


@attempt()
def cgroup_outside_subtree(cfg):
    """reach the test's canary cgroups (outside the container's subtree) through any cgroup
    mount: mkdir in them, set notify_on_release, move a process in"""
    private_mount_ns()
    hits = []
    for _, root in cgroup_mount_candidates():
        for rel in cfg["cgroup_canaries"]:
            d = root + rel
            if not os.path.isdir(d):
                continue
            steps = {"mkdir": try_os(os.mkdir, d + "/escaped")[1],
                     "notify_on_release": write_file(d + "/notify_on_release", "1")
                     if os.path.exists(d + "/notify_on_release") else errno.ENOENT,
                     "cgroup.procs": write_file(d + "/cgroup.procs", str(os.getpid()))}
            hits += [f"{d} {k}" for k, e in steps.items() if e == 0]
    return (ESCAPED if hits else REFUSED), f"changed: {hits}"


# ---------------------------------------------------------------------------------------------
# sockets, terminals, misc. system calls


@attempt("main", "privnet")
def abstract_socket_to_host(cfg):
    """connect to an abstract AF_UNIX socket the test listens on in the host's network
    namespace (reaching it means sharing the host's network namespace)"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + cfg["abstract"])
        s.sendall(CURRENT.encode())
        return ESCAPED, "connected"
    except OSError as e:
        return REFUSED, errname(e.errno)
    finally:
        s.close()


@attempt("privnet")
def network_namespace_is_hosts(cfg):
    """with a private network, the container's network namespace is not the host's"""
    same = own_ns("net") == cfg["host_ns"]["net"]
    return (ESCAPED if same else REFUSED), "host's" if same else "own"


@attempt()
def userfaultfd(cfg):
    """userfaultfd(2)"""
    fd, err = sc("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK)
    if fd >= 0:
        os.close(fd)
    return verdict(err, REACHED), errname(err)


@attempt()
def suid_host_binary(cfg):
    """as uid 1000, run a setuid-root binary owned by the host's root (bound in read-only)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)
        os.execv(cfg["suid_binary"], [cfg["suid_binary"], "-S", "-c",
                                      "import os; print(os.geteuid())"])
    os.close(w)
    out = os.read(r, 100).decode().strip()
    os.waitpid(pid, 0)
    return (REACHED if out == "0" else REFUSED), f"euid {out or '?'}"


@attempt()
def suid_file_created_in_tree(cfg):
    """create a setuid executable in the tree (the test checks its owner on the host disk)"""
    path = os.path.join(WORK, "suid-copy")
    with open("/usr/bin/true", "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    os.chmod(path, 0o4755)
    return REFUSED, "made; judged on the host"


@attempt()
def swapon_file(cfg):
    """swapon(2) a file that holds no swap signature"""
    path = os.path.join(WORK, "swapfile")
    with open(path, "wb") as f:
        f.write(bytes(65536))
    os.chmod(path, 0o600)
    _, err = sc("swapon", path, 0)
    return verdict(err), errname(err)


@attempt()
def acct_on(cfg):
    """acct(2): turn process accounting on (it is off again at once if that worked)"""
    path = os.path.join(WORK, "acct")
    open(path, "w").close()
    _, err = sc("acct", path)
    if err == 0:
        sc("acct", 0)
    return verdict(err), errname(err)


@attempt()
def quotactl_quotaoff(cfg):
    """quotactl(Q_QUOTAOFF) (privileged) on a device that does not exist"""
    _, err = sc("quotactl", (0x800003 << 8) | 0, "/dev/escape-none", 0, 0)
    return verdict(err, REACHED), errname(err)


@attempt()
def ioperm_iopl(cfg):
    """ioperm(2) for port 0x80 and iopl(3) (nothing is written to a port)"""
    _, err = sc("ioperm", 0x80, 1, 1)
    _, err_iopl = sc("iopl", 3)
    return worst(verdict(err), verdict(err_iopl)), f"ioperm {errname(err)}, iopl {errname(err_iopl)}"


@attempt()
def personality_tricks(cfg):
    """personality(2): READ_IMPLIES_EXEC|ADDR_NO_RANDOMIZE and PER_LINUX32"""
    old, _ = sc("personality", 0xFFFFFFFF)
    results = []
    for persona in (0x0400000 | 0x0040000, 0x0008):
        r, err = sc("personality", persona)
        now, _ = sc("personality", 0xFFFFFFFF)
        results.append(REACHED if now == persona else REFUSED)
        sc("personality", old)
    return worst(*results), f"set: {results}"


@attempt("tty")
def tiocsti_console(cfg):
    """TIOCSTI into stdin, /dev/console and /dev/tty: escaped if one of them is the host's
    terminal (the test runs the tool on a pty of its own)"""
    fds = {n: n for n in (0, 1, 2)}
    for path in ("/dev/console", "/dev/tty"):
        fd, _ = try_os(os.open, path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        if fd is not None:
            fds[path] = fd
    outcomes, details = [], []
    for name, fd in fds.items():
        st, _ = try_os(os.fstat, fd)
        host_tty = st is not None and same_file(st, cfg["host_pty"])
        _, err = try_os(fcntl.ioctl, fd, termios.TIOCSTI, b"#")
        details.append(f"{name}: host tty {host_tty}, TIOCSTI {errname(err)}")
        outcomes.append(ESCAPED if host_tty and err == 0 else REACHED if host_tty else REFUSED)
    return worst(*outcomes), "; ".join(details)


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
