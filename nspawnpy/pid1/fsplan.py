"""Which mounts a container gets, in which order (nspawn's mount_all plus the
custom mounts), as a list of mounts.Op built from the settings.

Runs in: PID 1 (the API mounts) and the host side (the custom mounts, before clone).
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


def custom_mounts(settings, scratch: str, cleanups: list | None = None) -> list:
    """--bind/--bind-ro/--tmpfs/--overlay/--inaccessible, sorted by destination
    so that a mount below another one lands on top of it. Host directories made for
    them (overlay work dirs next to their upper layer) are removed by `cleanups`."""
    ops = []
    for read_only, specs in ((False, settings.bind), (True, settings.bind_ro)):
        for source, dest, options in specs:
            if {"idmap", "rootidmap", "owneridmap"} & set(options):
                from ..errors import UserError
                raise UserError(f"Bind mount {dest}: ID-mapped binds need user namespacing "
                                "(--private-users=), which nspawnpy does not support yet.")
            in_container = source.startswith("+")
            if source == "":
                source = f"{scratch}/bind{len(ops)}"
                os.makedirs(source, exist_ok=True)
            elif in_container:
                source = source[1:]
            ops.append(m.Bind(source, dest, read_only=read_only, recursive="norbind" not in options,
                              in_container=in_container))
    for path, options in settings.tmpfs:
        ops.append(m.Mount(path, "tmpfs", options, MS_NODEV | MS_STRICTATIME))
    for read_only, specs in ((False, settings.overlay), (True, settings.overlay_ro)):
        for layers, dest in specs:
            work = f"{scratch}/overlay{len(ops)}"
            upper = layers[-1] if not read_only and len(layers) > 1 else ""
            if upper and not upper.startswith("+"):
                work = _work_dir_next_to(upper, cleanups)
            ops.append(m.Overlay(layers, dest, read_only, work))
    for path in settings.inaccessible:
        ops.append(m.Mask(path))
    ops.sort(key=lambda op: op.where)
    return ops


def _work_dir_next_to(upper: str, cleanups) -> str:
    """overlayfs needs its work dir on the upper layer's file system: `.#UPPERxxxx` beside it."""
    import shutil
    from ..errors import UserError
    parent, base = os.path.split(upper.rstrip("/"))
    work = f"{parent}/.#{base}{os.urandom(8).hex()}"
    try:
        os.mkdir(work, 0o700)
    except OSError as e:
        raise UserError(f"Failed to create overlay work directory {work}: {e.strerror}") from None
    if cleanups is not None:
        cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
    return work


def final_mounts() -> list:
    """Protective remounts that must come after everything was populated."""
    return [
        m.ReadOnly("/run/host", MS_NOSUID | MS_NODEV | MS_NOEXEC, required=True),
    ]

