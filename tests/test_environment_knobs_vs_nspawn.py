"""The $SYSTEMD_NSPAWN_* knobs systemd-nspawn 252 honours (its binary reads API_VFS_WRITABLE,
UNIFIED_HIERARCHY, USE_CGNS, TMPFS_TMP, SHARE_NS_{IPC,PID,UTS}, SHARE_SYSTEM, LOCK and
CONTAINER_SERVICE), each compared with systemd-nspawn: the mount view, the namespaces the
payload is in, its hostname, the exit status and the messages (bad values included)."""

import os
import re
import subprocess

import pytest

from test_mount_view_vs_nspawn import COMMON, normalise

PROBE = ("echo pid=$$; hostname; for n in ipc pid uts; do eval h=\\$HOST_NS_$n; "
         "[ \"$(readlink /proc/self/ns/$n)\" = \"$h\" ] && echo $n=host; done; "
         "cat /proc/self/mountinfo")


def host_namespaces() -> list:
    """--setenv options that tell the probe the host's namespaces."""
    return [f"--setenv=HOST_NS_{n}={os.readlink(f'/proc/self/ns/{n}')}" for n in ("ipc", "pid", "uts")]


def _view(r) -> tuple:
    lines = r.stdout.splitlines()
    head = [line for line in lines if " - " not in line]
    pid = head[0] if head and head[0] == "pid=1" else "pid=other"
    messages = [re.sub(r"/sys/fs/cgroup/\w+:", "/sys/fs/cgroup/CONTROLLER:", line)
                for line in r.stderr.splitlines() if "Attempted to remove disk file" not in line]
    return r.returncode, [pid, *head[1:]], normalise(r.stdout), messages


def _compare(root, run_nspawnpy, monkeypatch, env: dict, options=()):
    from testhost import run_systemd_nspawn, systemd_nspawn
    if systemd_nspawn() is None:
        pytest.skip("systemd-nspawn is not installed (systemd-container)")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = [*COMMON, "-D", str(root), *options, *host_namespaces(), "/bin/sh", "-c", PROBE]
    theirs = _view(run_systemd_nspawn(args))
    ours = _view(run_nspawnpy(*args, env=env))
    assert ours == theirs
    return ours


KNOBS = {
    "api-vfs-writable": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}, ()),
    "api-vfs-writable-private-network": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "yes"},
                                         ("--private-network",)),
    "api-vfs-network": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}, ()),
    "api-vfs-network-private-network": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
                                        ("--private-network",)),
    "no-tmpfs-on-tmp": ({"SYSTEMD_NSPAWN_TMPFS_TMP": "0"}, ()),
    "unified-hierarchy": ({"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}, ()),
    "legacy-hierarchy": ({"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "no"}, ()),
    "no-cgroup-namespace": ({"SYSTEMD_NSPAWN_USE_CGNS": "0"}, ()),
    "share-pid": ({"SYSTEMD_NSPAWN_SHARE_NS_PID": "1"}, ()),
    "share-ipc": ({"SYSTEMD_NSPAWN_SHARE_NS_IPC": "1"}, ()),
    "share-uts": ({"SYSTEMD_NSPAWN_SHARE_NS_UTS": "yes"}, ()),
    "share-system": ({"SYSTEMD_NSPAWN_SHARE_SYSTEM": "1"}, ()),
    "no-lock": ({"SYSTEMD_NSPAWN_LOCK": "0"}, ()),
    "lock-with-no-boolean": ({"SYSTEMD_NSPAWN_LOCK": "bogus"}, ()),
    "container-service": ({"SYSTEMD_NSPAWN_CONTAINER_SERVICE": "other"}, ()),
    "api-vfs-writable-userns": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "yes"}, ("-U",)),
    "api-vfs-network-userns": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}, ("-U",)),
    "api-vfs-network-userns-private-network": ({"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
                                               ("-U", "--private-network")),
}


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_knob_acts_as_in_nspawn(busybox_root, run_nspawnpy, monkeypatch, knob):
    env, options = KNOBS[knob]
    _compare(busybox_root, run_nspawnpy, monkeypatch, env, options)


@pytest.mark.parametrize("name", ["API_VFS_WRITABLE", "TMPFS_TMP", "USE_CGNS",
                                  "UNIFIED_HIERARCHY", "SHARE_NS_IPC", "SHARE_NS_PID",
                                  "SHARE_NS_UTS", "SHARE_SYSTEM"])
def test_a_bad_value_fails_with_nspawns_words(busybox_root, run_nspawnpy, monkeypatch, name):
    code, _, _, messages = _compare(busybox_root, run_nspawnpy, monkeypatch,
                                    {f"SYSTEMD_NSPAWN_{name}": "bogus"})
    assert code == 1 and messages == [f"Failed to parse $SYSTEMD_NSPAWN_{name}: Invalid argument"]


def test_lock_0_lets_a_second_run_share_the_tree(busybox_root, nspawnpy_cmd, nspawnpy_env):
    """Without the lock a second container may start on a tree that is in use."""
    first = subprocess.Popen([*nspawnpy_cmd, *COMMON, "-D", str(busybox_root), "/bin/sleep", "5"],
                             env=nspawnpy_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        import time
        time.sleep(1)
        for value, expected in (("0", 0), ("1", 1)):
            r = subprocess.run([*nspawnpy_cmd, *COMMON, "-D", str(busybox_root), "/bin/true"],
                               env={**nspawnpy_env, "SYSTEMD_NSPAWN_LOCK": value},
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == expected, (value, r.stderr)
    finally:
        first.kill()
        first.wait()
