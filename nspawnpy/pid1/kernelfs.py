"""The kernel's file systems as nspawn shows them: /proc with /proc/sys read-only (and
/proc/sys/net writable in a network namespace of its own), /sys as a read-only tmpfs holding
the network namespace's sysfs piecewise.

Runs in: PID 1, before pivot_root (mount operations of pid1/fsplan.py's plan).
"""

import os

from .. import intree, linux
from ..linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY
from .mounts import Op, bind_remount, write_file

PROC_READ_ONLY = ("acpi", "apm", "asound", "bus", "fs", "irq", "scsi")
# nspawn 252 covers these with /run/systemd/inaccessible/reg, looked up in the container's own
# (fresh) /run, where nothing has made it yet: the attempt fails and they stay as they are.
PROC_MASKED = ("kallsyms", "kcore", "keys", "sysrq-trigger", "timer_list")
INACCESSIBLE_REG = "/run/systemd/inaccessible/reg"


class ProcSys(Op):
    """/proc/sys read-only; with a network namespace of its own /proc/sys/net stays
    writable, bound before /proc/sys turns read-only as in nspawn (its copy that propagates
    to /proc, hidden below, is writable too)."""
    where = "/proc/sys"

    def __init__(self, writable_net: bool):
        self.writable_net = writable_net

    def execute(self, root):
        with intree.at(root, self.where) as target:
            linux.mount(target, target, None, MS_BIND)
        with intree.at(root, self.where) as target:  # the bind just made; below it is procfs
            self.protect(target)

    def protect(self, target: str) -> None:
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        net = target + "/net"
        if self.writable_net and os.path.exists(net):
            linux.mount(net, net, None, MS_BIND)
            bind_remount(target, MS_RDONLY | flags)
            bind_remount(net, flags)
        else:
            bind_remount(target, MS_RDONLY | flags)


class MaskProc(Op):
    """Cover a /proc file with the container's /run/systemd/inaccessible/reg, as nspawn does
    (and, as in nspawn, silently not where the container has none)."""

    def __init__(self, where):
        self.where = where

    def execute(self, root):
        try:
            with intree.at(root, INACCESSIBLE_REG) as source, intree.at(root, self.where) as target:
                linux.mount(source, target, None, MS_BIND)
        except OSError:
            return
        intree.remount(root, self.where, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


SYSFS_DIRS = ("block", "bus", "class", "dev", "devices", "kernel")


class NetnsSysfs(Op):
    """/sys for a container with a network namespace of its own: a read-only tmpfs that
    will hold block, bus, class, dev, devices and kernel of the namespace's own sysfs
    (NetnsSysfsDirs), plus /sys/fs/cgroup and /sys/fs/selinux; left writable with writable API
    file systems."""

    def __init__(self, where="/sys", writable=False, ids=""):
        self.where, self.writable, self.ids = where, writable, ids

    def execute(self, root):
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        intree.mount(root, self.where, "tmpfs", "tmpfs", flags,
                     "mode=0555,size=4m,nr_inodes=1k" + self.ids)
        with intree.at(root, self.where) as target:  # the tmpfs just mounted: ours
            # fs/selinux: nspawn makes that mount point whether or not SELinux is on
            for name in SYSFS_DIRS + ("fs", "fs/cgroup", "fs/selinux"):
                os.mkdir(f"{target}/{name}", 0o755)
            if not self.writable:
                bind_remount(target, MS_RDONLY | flags)


class NetnsSysfsDirs(Op):
    """The network namespace's sysfs (so /sys/class/net shows the container's links),
    mounted on a scratch directory in /run and bound piecewise into the /sys tmpfs
    (read-only unless the API file systems are writable)."""
    where = "/sys"

    def __init__(self, writable=False):
        self.writable = writable

    def execute(self, root):
        with intree.at(root, self.where) as target, intree.at(root, "/run") as run:  # our tmpfses
            self.bind_dirs(target, f"{run}/.#sysfs{os.urandom(8).hex()}")

    def bind_dirs(self, target: str, full: str) -> None:
        os.mkdir(full, 0o700)
        try:
            linux.mount("sysfs", full, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC
                        | (0 if self.writable else MS_RDONLY))
            try:
                for name in SYSFS_DIRS:
                    if os.path.isdir(f"{full}/{name}"):
                        linux.mount(f"{full}/{name}", f"{target}/{name}", None, MS_BIND)
            finally:
                linux.umount2(full, linux.MNT_DETACH)
        finally:
            os.rmdir(full)


def mask_with_file(root: str, where: str, data: bytes) -> None:
    """Cover a /proc file with a private one made in /run and unlinked again (boot_id),
    named as nspawn names it: /run/.#proc-sys-kernel-random-boot-idXXXXXXXXXXXXXXXX."""
    if not intree.exists(root, where):
        return
    with intree.at(root, "/run") as run:  # our tmpfs
        private = f"{run}/.#{_scratch_name(where)}{os.urandom(8).hex()}"
        write_file(private, data, 0o444)
        try:
            with intree.at(root, where) as target:
                linux.mount(private, target, None, MS_BIND)
        finally:
            os.unlink(private)
    intree.remount(root, where, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _scratch_name(where: str) -> str:
    return where.strip("/").replace("/", "-").replace("_", "-")


def held_fifo(root: str, where: str):
    """A FIFO in /run to cover `where` with later (cover_with_fifo), named as nspawn's, and
    an fd holding both of its ends open (close-on-exec): whoever keeps it lets the container
    open the FIFO either way without blocking, as nspawn's does. (None, None) if `where`
    does not exist."""
    if not intree.exists(root, where):
        return None, None
    name = f".#{_scratch_name(where)}{os.urandom(8).hex()}"
    with intree.at(root, "/run") as run:  # our tmpfs
        os.mkfifo(f"{run}/{name}", 0o600)
        return name, os.open(f"{run}/{name}", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def cover_with_fifo(root: str, where: str, name: str) -> None:
    """Bind the FIFO /run/NAME (from held_fifo) over `where` and unlink it."""
    with intree.at(root, "/run") as run:
        try:
            with intree.at(root, where) as target:
                linux.mount(f"{run}/{name}", target, None, MS_BIND)
        finally:
            os.unlink(f"{run}/{name}")
