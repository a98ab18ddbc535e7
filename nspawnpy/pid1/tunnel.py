"""The container end of machinectl bind's propagation tunnel (the host end and the why are
in supervisor/propagate.py): /run/host/incoming, a read-only slave.

Runs in: PID 1, before pivot_root, on the shared tree.
"""

import os

from .. import intree, linux
from ..linux import MS_BIND, MS_RDONLY, MS_REMOUNT, MS_SLAVE

INCOMING = "/run/host/incoming"


def incoming(root: str, path: str, detached=None) -> None:
    """Bind the host end at /run/host/incoming, read-only, as a slave. In a user namespace
    the supervisor hands over a `detached` bind of it instead (PID 1 may not reach it)."""
    with intree.at(root, "/run/host", "dir") as host:  # in our /run tmpfs
        _attach(path, host + "/incoming", detached)


def _attach(path: str, target: str, detached) -> None:
    try:
        os.mkdir(target, 0o600)
    except FileExistsError:
        pass
    if detached is not None:
        linux.move_mount(detached, target)
        os.close(detached)
    else:
        linux.mount(path, target, None, MS_BIND)
    linux.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    linux.mount(None, target, None, MS_SLAVE)
