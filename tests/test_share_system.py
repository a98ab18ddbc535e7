"""The deprecated --share-system, which systemd-nspawn 252 still takes (not in its --help): a
warning, and the host's IPC, PID and UTS namespaces kept, as $SYSTEMD_NSPAWN_SHARE_SYSTEM=1."""

from __future__ import annotations

import os

import pytest

from conftest import run_pipe

WARNING = "Please do not use --share-system anymore, use $SYSTEMD_NSPAWN_SHARE_* instead."
PROBE = ("/bin/sh", "-c", "for ns in ipc pid uts net; do echo $ns $(readlink /proc/self/ns/$ns);"
         " done; [ $$ = 1 ] && echo pid-1 || echo not-pid-1; hostname")


def _host_view() -> list[str]:
    return [f"{ns} {os.readlink(f'/proc/self/ns/{ns}')}" for ns in ("ipc", "pid", "uts")]


@pytest.mark.parametrize("spelling", ["--share-system", "--share"])
def test_share_system_as_systemd_nspawn(run_nspawnpy, systemd_nspawn, busybox_root, spelling):
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "--console=pipe", spelling,
                             "-D", str(busybox_root), *PROBE])
    ours = run_pipe(run_nspawnpy, busybox_root, spelling, *PROBE, check=None)
    said = [line for line in theirs.stderr.splitlines()
            if "Attempted to remove disk file system" not in line]
    assert (ours.returncode, ours.stdout, ours.stderr.splitlines()) == (
        theirs.returncode, theirs.stdout, said)
    assert said == [WARNING]
    lines = ours.stdout.splitlines()
    assert lines[:3] == _host_view()
    assert lines[4] == "not-pid-1" and lines[5] == os.uname().nodename
