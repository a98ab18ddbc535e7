"""The API file systems every container gets, in the order they must happen (nspawn's
mount_all), as lists of mounts.Op; the custom mounts are planned in plan/mounts.py.

Runs in: PID 1, before pivot_root.
"""

import os

from . import mounts as m
from ..linux import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY

TMPFS_RUN = "mode=0755,size=20%,nr_inodes=800k"
TMPFS_TMP = "mode=01777,size=10%,nr_inodes=400k"
TMPFS_DEV = "mode=0755,size=4m,nr_inodes=64k"
MS_STRICTATIME = 1 << 24   # nspawn's tmpfs API mounts show neither relatime nor noatime


def api_mounts(private_net: bool, userns: bool = False, sysfs_fd=None) -> list:
    """/proc, /sys, /dev, /run and /tmp, in the order they must happen. In a user
    namespace without a network namespace of its own, /sys is a sysfs the supervisor
    mounted (`sysfs_fd`), and /dev gets the host's device nodes bound in."""
    plan = [
        m.Call("/", m.base_filesystem),
        m.Mount("/proc", "proc", flags=MS_NOSUID | MS_NOEXEC | MS_NODEV),
    ]
    plan += [m.ReadOnly(f"/proc/{name}") for name in m.PROC_READ_ONLY]
    if private_net:
        plan.append(m.Writable("/proc/sys/net"))
    plan += [
        m.Attach("/sys", sysfs_fd) if sysfs_fd is not None else
        m.NetnsSysfs() if private_net else
        m.Mount("/sys", "sysfs", flags=MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY),
        m.Mount("/dev", "tmpfs", TMPFS_DEV, MS_NOSUID | MS_STRICTATIME),
        m.Call("/dev", m.populate_dev, userns),
        m.Mount("/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=620,gid=5",
                MS_NOSUID | MS_NOEXEC),
        m.Mount("/dev/shm", "tmpfs", TMPFS_TMP, MS_NOSUID | MS_NODEV | MS_STRICTATIME),
        m.Mount("/dev/mqueue", "mqueue", flags=MS_NOSUID | MS_NODEV | MS_NOEXEC),
        m.Mount("/run", "tmpfs", TMPFS_RUN, MS_NOSUID | MS_NODEV | MS_STRICTATIME),
        m.Call("/run/host/inaccessible", m.populate_inaccessible),
    ]
    if os.environ.get("SYSTEMD_NSPAWN_TMPFS_TMP", "1") not in ("0", "no", "false"):
        plan.append(m.Mount("/tmp", "tmpfs", TMPFS_TMP, MS_NOSUID | MS_NODEV | MS_STRICTATIME))
    return plan


def final_mounts() -> list:
    """Protective remounts that must come after everything was populated."""
    return [
        m.ReadOnly("/run/host", MS_NOSUID | MS_NODEV | MS_NOEXEC, required=True),
    ]

