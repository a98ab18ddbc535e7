"""Thin ctypes wrappers for the syscalls `os` lacks, named like the syscalls.

Every wrapper raises OSError with errno on failure, like `os` does.

Runs in: every process, PID 1 included (standard library only).
"""

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
# clone() must run with the GIL held so the child starts as an exact copy.
_libc_gil = ctypes.PyDLL(None, use_errno=True)

# Namespace flags (linux/sched.h).
CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MNT_DETACH = 2

# The new mount API (linux/mount.h).
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
MOUNT_ATTR_IDMAP = 0x00100000

# openat2(2) resolve flags (linux/openat2.h).
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {
    # name: (x86_64, aarch64)
    "clone": (56, 220),
    "pivot_root": (155, 41),
    "setns": (308, 268),
    "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424),
    "personality": (135, 92),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "mount_setattr": (442, 442),
    "close_range": (436, 436),
    "openat2": (437, 437),
}
_ARCH = 1 if os.uname().machine in ("aarch64", "arm64") else 0


def _check(result: int, what: str = "") -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err) + (f": {what}" if what else ""))
    return result


_libc.syscall.restype = ctypes.c_long
_libc_gil.syscall.restype = ctypes.c_long


def _syscall(name: str, *args, lib=_libc) -> int:
    return lib.syscall(ctypes.c_long(_SYSCALLS[name][_ARCH]), *args)


def _b(path):
    return None if path is None else os.fsencode(path)


def mount(source, target, fstype, flags: int = 0, data=None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), str(target))


def umount2(target, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), str(target))


def pivot_root(new_root, put_old) -> None:
    _check(_syscall("pivot_root", _b(new_root), _b(put_old)), str(new_root))


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def open_tree(path, flags: int, dirfd: int = -100) -> int:
    return _check(_syscall("open_tree", dirfd, _b(path), ctypes.c_uint(flags)), str(path))


def mount_setattr(fd: int, attr_set: int, userns_fd: int = 0, path: str = "",
                  flags: int = AT_EMPTY_PATH) -> None:
    attr = _MountAttr(attr_set, 0, 0, userns_fd)
    _check(_syscall("mount_setattr", fd, _b(path), ctypes.c_uint(flags), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))))


def move_mount(from_fd: int, to_path, from_path: str = "", to_dirfd: int = -100,
               flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    _check(_syscall("move_mount", from_fd, _b(from_path), to_dirfd, _b(to_path),
                    ctypes.c_uint(flags)), str(to_path))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    return _check(_syscall("openat2", dirfd, _b(path), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how))), str(path))


def fsopen(fstype: str) -> int:
    return _check(_syscall("fsopen", _b(fstype), ctypes.c_uint(1)), fstype)  # FSOPEN_CLOEXEC


def fsmount_new(fstype: str, attr_flags: int) -> int:
    """fsopen + create + fsmount: a detached mount of a fresh `fstype` instance."""
    fs = fsopen(fstype)
    try:
        # the source mountinfo shows, as for mount(2) with source=fstype
        _check(_syscall("fsconfig", fs, ctypes.c_uint(1), b"source", _b(fstype), 0), fstype)
        _check(_syscall("fsconfig", fs, ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, 0), fstype)
        return _check(_syscall("fsmount", fs, ctypes.c_uint(FSMOUNT_CLOEXEC),
                               ctypes.c_uint(attr_flags)), fstype)
    finally:
        os.close(fs)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def set_fs_ids(uid: int, gid: int) -> None:
    """setfsgid + setfsuid: the IDs file system access runs as (they report no errors)."""
    _libc.setfsgid(ctypes.c_uint(gid))
    _libc.setfsuid(ctypes.c_uint(uid))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_syscall("setns", fd, nstype))


def clone(flags: int) -> int:
    """fork(2) with namespace flags: returns 0 in the child, its PID in the parent.

    The raw syscall (no new stack) behaves like fork; the GIL stays held
    across it, so the child continues as an ordinary single-threaded copy.
    """
    signal_chld = 17
    return _check(_syscall("clone", ctypes.c_ulong(flags | signal_chld), None, None, None, None,
                           lib=_libc_gil))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)))


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)))


def pidfd_open(pid: int) -> int:
    return _check(_syscall("pidfd_open", pid, 0))


CLOSE_RANGE_CLOEXEC = 4


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(_syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)))


def personality(persona: int) -> int:
    return _check(_syscall("personality", ctypes.c_ulong(persona)))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data))
