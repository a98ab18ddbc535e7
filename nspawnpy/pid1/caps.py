"""Capability names, nspawn's default bounding set, and dropping caps for the payload.

Runs in: PID 1 (dropping caps after pivot_root); the host side reads the names and the
bounding set.
"""

import os

from .. import linux

NAMES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
    "cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
    "cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw",
    "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot",
    "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
    "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
    "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override",
    "cap_mac_admin", "cap_syslog", "cap_wake_alarm", "cap_block_suspend", "cap_audit_read",
    "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)
BY_NAME = {name: i for i, name in enumerate(NAMES)}
ALL = (1 << len(NAMES)) - 1
CAP_NET_ADMIN = BY_NAME["cap_net_admin"]

DEFAULT = sum(1 << BY_NAME[n] for n in (
    "cap_audit_control", "cap_audit_write", "cap_chown", "cap_dac_override",
    "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_ipc_owner", "cap_kill",
    "cap_lease", "cap_linux_immutable", "cap_mknod", "cap_net_bind_service",
    "cap_net_broadcast", "cap_net_raw", "cap_setfcap", "cap_setgid", "cap_setpcap",
    "cap_setuid", "cap_sys_admin", "cap_sys_boot", "cap_sys_chroot", "cap_sys_nice",
    "cap_sys_ptrace", "cap_sys_resource", "cap_sys_tty_config"))


def parse_list(value: str) -> int:
    """'CAP_A,CAP_B' or 'all' -> bit mask; ValueError names a bad entry."""
    mask = 0
    for word in value.replace(",", " ").split():
        if word.lower() == "all":
            mask |= ALL
            continue
        name = word.lower()
        if not name.startswith("cap_"):
            name = "cap_" + name
        if name not in BY_NAME:
            raise ValueError(f"unknown capability '{word}'")
        mask |= 1 << BY_NAME[name]
    return mask


_last_cap = None


def last_cap() -> int:
    """The kernel's highest capability, read once: the supervisor reads it on the host
    before clone() and PID 1 inherits it (PID 1's first look-up in its fresh /proc/sys
    took 2-3 ms of every start)."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last_cap = int(f.read())
        except OSError:
            _last_cap = len(NAMES) - 1
    return _last_cap


def current_bounding() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return ALL


def apply(bounding: int, ambient: int) -> None:
    """Shrink the bounding set to `bounding` and make it the effective set, as nspawn does.

    Runs in the container just before exec, as root.
    """
    top = last_cap()
    bounding &= current_bounding()
    for cap in range(top + 1):
        if not bounding & (1 << cap):
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    # nspawn leaves the kept set in inheritable too, so exec as root keeps it.
    linux.capset(bounding, bounding, bounding | ambient)
    for cap in range(top + 1):
        if ambient & (1 << cap):
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)


def become_user(uid: int, ambient: int) -> None:
    """Switch to `uid` keeping exactly the `ambient` capabilities, as nspawn's user switch
    leaves them: permitted, effective, inheritable and ambient are that set (all empty
    without --ambient-capability), so the user's payload keeps them across exec."""
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setresuid(uid, uid, uid)
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)
    linux.capset(ambient, ambient, ambient)
    for cap in range(last_cap() + 1):
        if ambient & (1 << cap):
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)
