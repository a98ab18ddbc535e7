"""The container end of machinectl bind's propagation tunnel (the host end and the why are
in supervisor/propagate.py): /run/host/incoming, a read-only slave.

Runs in: PID 1 (or, with --private-users, the set-up process), before pivot_root, on the shared tree.
"""

import os

from .. import intree, linux
from ..linux import MS_BIND, MS_RDONLY, MS_REMOUNT, MS_SLAVE

INCOMING = "/run/host/incoming"


def incoming(root: str, path: str, owner=None) -> None:
    """Bind the host end at /run/host/incoming, read-only, as a slave (its mount point is
    the container root's, as in nspawn)."""
    with intree.at(root, "/run/host", "dir") as host:  # in our /run tmpfs
        _attach(path, host + "/incoming", owner)


def _attach(path: str, target: str, owner) -> None:
    try:
        os.mkdir(target, 0o600)
    except FileExistsError:
        pass
    if owner is not None:
        os.lchown(target, owner, owner)
    linux.mount(path, target, None, MS_BIND)
    linux.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    linux.mount(None, target, None, MS_SLAVE)
