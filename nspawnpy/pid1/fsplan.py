"""The API file systems every container gets, in nspawn's order and place (its mount_all,
split as nspawn splits it between the set-up on the shared tree and the container's own
copy of it), as lists of mounts.Op; the custom mounts are planned in plan/mounts.py.

Runs in: PID 1, before pivot_root.
"""

import os

from . import kernelfs as k, mounts as m
from ..linux import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY

TMPFS_RUN = "mode=0755,size=20%,nr_inodes=800k"
TMPFS_TMP = "mode=01777,size=10%,nr_inodes=400k"
TMPFS_DEV = "mode=0755,size=4m,nr_inodes=64k"
MS_STRICTATIME = 1 << 24   # nspawn's tmpfs API mounts show neither relatime nor noatime


def tree_mounts(private_net: bool, owner=None, api_vfs_writable=False, tmp_tmpfs=True) -> list:
    """What nspawn mounts on the shared tree before the container gets its own copy of it,
    in nspawn's order (the copy lists mounts in tree order, so the order shows): /tmp,
    /sys, /dev, /dev/shm, /run, /run/host bound onto itself, the device nodes and devpts.
    With a user namespace, `owner` is the container root's host UID (and GID): the tmpfs
    and what is made in them are its, and devpts' tty group is the container's.
    `api_vfs_writable` ($SYSTEMD_NSPAWN_API_VFS_WRITABLE): True leaves a plain sysfs
    writable, "network" treats /sys as with a network namespace of its own; `tmp_tmpfs`
    ($SYSTEMD_NSPAWN_TMPFS_TMP) puts a tmpfs on /tmp."""
    ids = f",uid={owner},gid={owner}" if owner is not None else ""
    netns = private_net or api_vfs_writable == "network"
    sys_flags = MS_NOSUID | MS_NOEXEC | MS_NODEV | (0 if api_vfs_writable is True else MS_RDONLY)
    plan = [m.Call("/", m.base_filesystem)]
    if tmp_tmpfs:
        plan.append(m.Mount("/tmp", "tmpfs", TMPFS_TMP + ids, MS_NOSUID | MS_NODEV | MS_STRICTATIME))
    plan += [
        k.NetnsSysfs(writable=api_vfs_writable is True, ids=ids) if netns else
        m.Mount("/sys", "sysfs", flags=sys_flags),
        m.Mount("/dev", "tmpfs", TMPFS_DEV + ids, MS_NOSUID | MS_STRICTATIME),
        m.Mount("/dev/shm", "tmpfs", TMPFS_TMP + ids, MS_NOSUID | MS_NODEV | MS_STRICTATIME),
        m.Mount("/run", "tmpfs", TMPFS_RUN + ids, MS_NOSUID | MS_NODEV | MS_STRICTATIME),
        m.SelfBind("/run/host", owner),
        m.Call("/dev", m.populate_dev, owner),
        m.Call("/run/host/inaccessible", m.populate_inaccessible, owner),
        m.Mount("/dev/pts", "devpts", f"newinstance,ptmxmode=0666,mode=620,gid={5 + (owner or 0)}",
                MS_NOSUID | MS_NOEXEC),
        m.Call("/dev/ptmx", m.ptmx_link, owner),
    ]
    return plan


def own_mounts(private_net: bool, api_vfs_writable=False) -> list:
    """What nspawn mounts once the container has its own copy of the tree: /proc with its
    read-only and masked parts (none of them when $SYSTEMD_NSPAWN_API_VFS_WRITABLE is true),
    /dev/mqueue, the netns's sysfs, /run/host made read-only."""
    netns = private_net or api_vfs_writable == "network"
    plan = [m.Mount("/proc", "proc", flags=MS_NOSUID | MS_NOEXEC | MS_NODEV)]
    if api_vfs_writable is not True:
        plan.append(k.ProcSys(writable_net=netns))
        plan += [k.MaskProc(f"/proc/{name}") for name in k.PROC_MASKED]
        plan += [m.ReadOnly(f"/proc/{name}") for name in k.PROC_READ_ONLY]
    plan.append(m.Mount("/dev/mqueue", "mqueue", flags=MS_NOSUID | MS_NODEV | MS_NOEXEC))
    if netns:
        plan.append(k.NetnsSysfsDirs(writable=api_vfs_writable is True))
    plan.append(m.ReadOnly("/run/host", MS_NOSUID | MS_NODEV | MS_NOEXEC, required=True,
                           bind=False))
    return plan
