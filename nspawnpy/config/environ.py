"""The $SYSTEMD_NSPAWN_* environment knobs systemd-nspawn 252 honours (besides the
command line), read once at start-up with nspawn's parsing and its error for a bad value.

  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY  bool: cgroup2 for the container (yes) or the v1 layout (no)
  SYSTEMD_NSPAWN_USE_CGNS           bool: a cgroup namespace of its own (default yes)
  SYSTEMD_NSPAWN_API_VFS_WRITABLE   bool or "network": /sys, /proc/sys writable (or only
                                    /proc/sys/net)
  SYSTEMD_NSPAWN_TMPFS_TMP          bool: a tmpfs on /tmp (default yes)
  SYSTEMD_NSPAWN_SHARE_NS_{IPC,PID,UTS}, SYSTEMD_NSPAWN_SHARE_SYSTEM (all three)
                                    bool: keep the host's namespace of that kind
  SYSTEMD_NSPAWN_LOCK               bool: lock the tree (default yes; any other value: yes)
  SYSTEMD_NSPAWN_CONTAINER_SERVICE  the "service" and $container value (read where used)

Runs in: the host side (parsing), PID 1 reads the parsed values from the plan.
"""

import os

from ..errors import UserError


def env_bool(name: str, default=None):
    """systemd's getenv_bool(): None (or `default`) when unset, else the boolean; a value
    that is none fails as nspawn fails."""
    value = os.environ.get(name)
    if value is None:
        return default
    from .values import parse_boolean
    try:
        return parse_boolean(value)
    except ValueError:
        raise UserError(f"Failed to parse ${name}: Invalid argument") from None


def api_vfs_writable():
    """$SYSTEMD_NSPAWN_API_VFS_WRITABLE as nspawn 252 reads it: False (unset: the API file
    systems read-only), True (writable), or "network" (read-only, but /proc/sys/net writable
    and /sys the network namespace's, as with a private network)."""
    if os.environ.get("SYSTEMD_NSPAWN_API_VFS_WRITABLE") == "network":
        return "network"
    return bool(env_bool("SYSTEMD_NSPAWN_API_VFS_WRITABLE", False))


def shared_namespaces(share_system: bool = False) -> frozenset:
    """The host namespaces the container keeps: 'ipc', 'pid', 'uts' ($SYSTEMD_NSPAWN_SHARE_NS_*;
    $SYSTEMD_NSPAWN_SHARE_SYSTEM, or the deprecated --share-system, keeps all three)."""
    shared = set()
    for kind in ("ipc", "pid", "uts"):
        if env_bool(f"SYSTEMD_NSPAWN_SHARE_NS_{kind.upper()}", False):
            shared.add(kind)
    if share_system or env_bool("SYSTEMD_NSPAWN_SHARE_SYSTEM", False):
        shared |= {"ipc", "pid", "uts"}
    return frozenset(shared)


def lock_trees() -> bool:
    """$SYSTEMD_NSPAWN_LOCK=0 (or another false value) turns tree locking off; anything
    else, also what is no boolean, leaves it on (nspawn 252 does not complain)."""
    value = os.environ.get("SYSTEMD_NSPAWN_LOCK")
    if value is None:
        return True
    from .values import parse_boolean
    try:
        return parse_boolean(value)
    except ValueError:
        return True
