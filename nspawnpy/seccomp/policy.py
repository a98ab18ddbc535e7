"""The payload's seccomp policy, as systemd-nspawn 252 builds it, via libseccomp (ctypes).

Stacked filters, each built separately for every architecture the machine can
run (on x86-64: x86, x32 and x86-64, native last), with foreign arches allowed
and no_new_privs left alone:

1. the allow list: nspawn's groups and single calls (NSPAWN_ALLOW_LIST), the
   capability-gated rows whose capability the payload keeps, and the user's
   SystemCallFilter= entries, minus the `~` entries; every other call in @known
   fails with EPERM, calls newer than @known with ENOSYS (so libcs fall back);
2. the audit mask: socket(AF_NETLINK, *, NETLINK_AUDIT) fails with EAFNOSUPPORT
   (x86 multiplexes socket(), so like nspawn there is none for x86);
3. with suppress_sync: sync()/msync() return 0 without doing anything, and so do
   fsync() & co. for fds 0..INT_MAX (negative fds still get EBADF, as in Debian's
   252); opening with O_SYNC/O_DSYNC fails with EINVAL, openat2() with ENOSYS.

Deny (`~`) entries are matched by their exact spelling while the allow list is
expanded, as nspawn does: `~fsync` removes fsync from every group, `~@timer`
skips the @timer group but keeps `times`, which @process also lists.

The programs are byte-for-byte those systemd-nspawn 252.39 loads (see
tests/test_seccomp.py).  Compiling costs ~25 ms of libseccomp time, so compiled
programs are cached (root-only directory on /run); loading them costs <1 ms.
libseccomp is loaded only when something has to be compiled.

Runs in: the host side before clone, only when the filters are not cached.
"""

from __future__ import annotations

import os

if False:  # annotations only: importing typing costs ~5 ms on the container start path
    from collections.abc import Iterable

from ..errors import UserError
# Availability and the on-disk cache need none of the tables below: they live in cache.py,
# which a container start with a cached filter imports instead of this module.
from . import libseccomp
from .groups import DESCRIPTIONS, GROUPS
from .libseccomp import _NR_SCMP_ERROR, _SCMP_ACT_ALLOW, Program

__all__ = [
    "GROUPS", "DESCRIPTIONS", "NSPAWN_ALLOW_LIST", "LOCAL_ARCHS",
    "expand", "plan", "compile_filters",
]


# Linux capability numbers used by the allow list.
CAP_IPC_LOCK = 14
CAP_SYS_MODULE = 16
CAP_SYS_RAWIO = 17
CAP_SYS_PTRACE = 19
CAP_SYS_PACCT = 20
CAP_SYS_BOOT = 22
CAP_SYS_TIME = 25
CAP_SYS_TTY_CONFIG = 26
CAP_SYSLOG = 34

# (capability needed or None, group or system call), in nspawn 252's order.
# Knowingly absent: @cpu-emulation @keyring @obsolete @pkey @swap, bpf,
# fanotify_*, kexec_*, lookup_dcookie, nfsservctl, open_by_handle_at,
# perf_event_open, quotactl.
NSPAWN_ALLOW_LIST: tuple[tuple[int | None, str], ...] = (
    *((None, g) for g in (
        "@aio", "@basic-io", "@chown", "@default", "@file-system", "@io-event", "@ipc",
        "@mount", "@network-io", "@process", "@resources", "@setuid", "@signal", "@sync",
        "@timer")),
    (CAP_SYS_TIME, "@clock"),
    (CAP_SYS_MODULE, "@module"),
    (CAP_SYS_RAWIO, "@raw-io"),
    (CAP_IPC_LOCK, "@memlock"),
    *((None, s) for s in (
        "arm_fadvise64_64 brk capget capset copy_file_range fadvise64 fadvise64_64 flock "
        "get_mempolicy getcpu getpriority getrandom ioctl ioprio_get kcmp madvise mincore "
        "mprotect mremap name_to_handle_at oldolduname olduname personality readahead readdir "
        "remap_file_pages sched_get_priority_max sched_get_priority_min sched_getaffinity "
        "sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval "
        "sched_rr_get_interval_time64 sched_yield seccomp sendfile sendfile64 setdomainname "
        "setfsgid setfsgid32 setfsuid setfsuid32 sethostname setpgid setsid splice sysinfo tee "
        "umask uname userfaultfd vmsplice").split()),
    (CAP_SYS_PACCT, "acct"),
    (CAP_SYS_PTRACE, "process_vm_readv"),
    (CAP_SYS_PTRACE, "process_vm_writev"),
    (CAP_SYS_PTRACE, "ptrace"),
    (CAP_SYS_BOOT, "reboot"),
    (CAP_SYSLOG, "syslog"),
    (CAP_SYS_TTY_CONFIG, "vhangup"),
)

# libseccomp architecture tokens (AUDIT_ARCH_* values).
_ARCH = {
    "x86": 0x40000003, "x86-64": 0xC000003E, "x32": 0x4000003E,
    "arm": 0x40000028, "arm64": 0xC00000B7,
    "ppc": 0x00000014, "ppc64": 0x80000015, "ppc64-le": 0xC0000015,
    "s390": 0x00000016, "s390x": 0x80000016, "riscv64": 0xC00000F3,
}

# uname machine -> architectures a filter is built for, native last (nspawn's order).
LOCAL_ARCHS: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86", "x32", "x86-64"),
    "i386": ("x86",), "i486": ("x86",), "i586": ("x86",), "i686": ("x86",),
    "aarch64": ("arm", "arm64"),
    "armv7l": ("arm",), "armv6l": ("arm",),
    "ppc64le": ("ppc", "ppc64", "ppc64-le"),
    "ppc64": ("ppc", "ppc64-le", "ppc64"),
    "ppc": ("ppc",),
    "s390x": ("s390", "s390x"),
    "s390": ("s390",),
    "riscv64": ("riscv64",),
}

_SCMP_ATTR_CTL_OPTIMIZE = 8
_SCMP_CMP_LE = 3
_SCMP_CMP_EQ = 4
_SCMP_CMP_MASKED_EQ = 7

_AF_NETLINK = 16
_NETLINK_AUDIT = 9
_SYNC_TAKES_FD = frozenset(("fdatasync", "fsync", "sync_file_range", "sync_file_range2", "syncfs"))
_O_SYNC = 0o4010000       # generic Linux values (x86, arm, s390, riscv, ppc)
_O_DSYNC = 0o10000



def _act_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


def expand(name: str, exclude: Iterable[str] = ()) -> list[str]:
    """System calls named by `name` (a call or an @group), skipping excluded spellings.

    An exclusion matches a group or call by name wherever it occurs in the
    nesting, the way nspawn applies its deny list.  Unknown groups raise KeyError.
    """
    out: dict[str, None] = {}
    _expand(name, frozenset(exclude), out)
    return list(out)


def _expand(name: str, exclude: frozenset[str], out: dict[str, None]) -> None:
    if name in exclude:
        return
    if name.startswith("@"):
        for member in GROUPS[name]:
            _expand(member, exclude, out)
    else:
        out[name] = None


def plan(caps: Iterable[int], allow: Iterable[str] = (), deny: Iterable[str] = ()
         ) -> tuple[list[str], list[str], list[str]]:
    """What the allow-list filter will contain, without touching the kernel.

    Returns (nspawn's calls for these caps, calls from `allow`, unknown @groups
    in `allow`).  Calls may still be unknown to libseccomp; those are skipped.
    """
    caps = set(caps)
    exclude = frozenset(deny)
    base: dict[str, None] = {}
    for cap, name in NSPAWN_ALLOW_LIST:
        if cap is None or cap in caps:
            _expand(name, exclude, base)
    extra: dict[str, None] = {}
    unknown: list[str] = []
    for name in allow:
        if name.startswith("@") and name not in GROUPS:
            if name not in exclude:
                unknown.append(name)
            continue
        _expand(name, exclude, extra)
    return list(base), [n for n in extra if n not in base], unknown


def plan_warnings(allow: Iterable[str], deny: Iterable[str]) -> list[str]:
    """nspawn's warnings for unknown @groups in the allow list, per architecture."""
    unknown = plan((), allow, deny)[2]
    return [f"Failed to add rule for system call {name} on {arch}, ignoring: {os.strerror(22)}"
            for arch in _local_archs() for name in unknown]


def _local_archs() -> tuple[str, ...]:
    return LOCAL_ARCHS.get(os.uname().machine, ("native",))


def compile_filters(caps: Iterable[int], allow: Iterable[str], deny: Iterable[str],
                    suppress_sync: bool, *, policy: bool = True) -> list[Program]:
    """The BPF programs nspawn would load, in order (libseccomp does the compiling).

    `policy` False leaves out the allow-list and audit filters (seccomp unavailable
    or SYSTEMD_SECCOMP=0); the sync suppression does not depend on it, as in nspawn.
    """
    caps = frozenset(caps)
    allow, deny = tuple(allow), tuple(deny)
    lib = libseccomp.lib()
    archs = [_ARCH.get(a, 0) for a in _local_archs()]
    programs: list[Program] = []
    if policy:
        programs += _compile_allow_list(lib, archs, caps, allow, deny)
        programs += _compile_audit_mask(lib, archs)
    if suppress_sync:
        programs += _compile_suppress_sync(lib, archs)
    return programs


def _compile_allow_list(lib: "libseccomp.Libseccomp", archs: list[int], caps: frozenset[int],
                        allow: tuple[str, ...], deny: tuple[str, ...]) -> list[Program]:
    base, extra, _ = plan(caps, allow, deny)
    base_nrs, extra_nrs = lib.resolve_all(base), lib.resolve_all(extra)
    # Calls the kernel knows but the filter does not allow fail with EPERM; anything
    # newer than the @known table fails with ENOSYS, so that libcs fall back.
    added = [name for name, _ in base_nrs + extra_nrs]
    known_nrs = lib.resolve_all(expand("@known", exclude=added))

    def body(ctx: int) -> Program:
        for name, nr in base_nrs:
            r = lib.add(ctx, _SCMP_ACT_ALLOW, nr)
            if r < 0 and r != -33:   # -EDOM: the call does not exist on this arch
                raise UserError(f"Failed to add syscall filter item {name}: {os.strerror(-r)}")
        for name, nr in extra_nrs:
            lib.add(ctx, _SCMP_ACT_ALLOW, nr)     # nspawn only warns; it has never failed here
        for name, nr in known_nrs:
            r = lib.add(ctx, _act_errno(1), nr)                       # EPERM
            if r < 0 and r != -33:
                break                             # nspawn warns and stops adding, too
        lib.set_attr(ctx, _SCMP_ATTR_CTL_OPTIMIZE, 2)     # a big filter: binary tree layout
        return lib.export(ctx), "Failed to install seccomp filter"

    return lib.each_arch(archs, _act_errno(38), body)                # default: ENOSYS


def _compile_audit_mask(lib: "libseccomp.Libseccomp", archs: list[int]) -> list[Program]:
    socket_nr = lib.resolve("socket")

    def body(ctx: int) -> Program | None:
        r = lib.add(ctx, _act_errno(97), socket_nr,                       # EAFNOSUPPORT
                    (0, _SCMP_CMP_EQ, _AF_NETLINK), (2, _SCMP_CMP_EQ, _NETLINK_AUDIT))
        if r < 0:                 # x86 multiplexes socket(); nspawn skips that arch too
            return None
        return lib.export(ctx), "Failed to install seccomp audit filter"

    return lib.each_arch(archs, _SCMP_ACT_ALLOW, body)


def _compile_suppress_sync(lib: "libseccomp.Libseccomp", archs: list[int]) -> list[Program]:
    sync_nrs = lib.resolve_all(expand("@sync"))
    open_nr, openat_nr, openat2_nr = (lib.resolve(n) for n in ("open", "openat", "openat2"))

    def body(ctx: int) -> Program:
        for name, nr in sync_nrs:
            if name in _SYNC_TAKES_FD:    # still EBADF for negative fds (unsigned compare)
                lib.add(ctx, _act_errno(0), nr, (0, _SCMP_CMP_LE, 0x7FFFFFFF))
            else:
                lib.add(ctx, _act_errno(0), nr)                       # "succeed", do nothing
        for flag in (_O_SYNC, _O_DSYNC):
            if open_nr != _NR_SCMP_ERROR:
                lib.add(ctx, _act_errno(22), open_nr, (1, _SCMP_CMP_MASKED_EQ, flag, flag))
            lib.add(ctx, _act_errno(22), openat_nr, (2, _SCMP_CMP_MASKED_EQ, flag, flag))
        if openat2_nr != _NR_SCMP_ERROR:
            lib.add(ctx, _act_errno(38), openat2_nr)        # ENOSYS: its flags are out of reach
        return lib.export(ctx), None                        # load errors are ignored

    return lib.each_arch(archs, _SCMP_ACT_ALLOW, body)
