"""The container end of machinectl bind's propagation tunnel (the host end and the why are
in supervisor/propagate.py): /run/host/incoming, a read-only slave of the host directory,
and after pivot_root every mount made shared, incoming a plain slave again.

Runs in: PID 1 (incoming_step before pivot_root, share_mounts after it).
"""

import os

from .. import linux
from ..linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT, \
    MS_SHARED, MS_SLAVE

INCOMING = "/run/host/incoming"


def incoming_step(path: str):
    def step(root: str) -> None:
        target = root + INCOMING
        os.makedirs(root + "/run/host", 0o755, exist_ok=True)
        try:
            os.mkdir(target, 0o600)
        except FileExistsError:
            pass
        linux.mount(path, target, None, MS_BIND)
        linux.mount(None, target, None,
                    MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        linux.mount(None, target, None, MS_SLAVE)
    return step


def share_mounts() -> None:
    """In PID 1 after pivot_root: every mount shared, /run/host/incoming a slave only."""
    linux.mount(None, "/", None, MS_REC | MS_SHARED)
    linux.mount(None, INCOMING, None, MS_SLAVE)
