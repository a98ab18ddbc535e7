"""The --as-pid2 stub init against systemd-nspawn 252's: its signal state as /proc/1/status
shows it (every signal blocked, none caught or ignored: it takes the ones it acts on
synchronously), and what it does with the signals the payload sends it."""

from __future__ import annotations

import pytest

from conftest import run_pipe

SIGNAL_STATE = "grep -E '^Sig(Blk|Ign|Cgt)' /proc/1/status"
# nspawn 252's stub while it waits: all blocked but SIGINT, SIGCHLD and SIGRTMIN+3..6, +13..16
NSPAWN_STUB_WAITING = ["SigBlk:\tfffc3f0e7ffafefd", "SigIgn:\t0000000000000000",
                       "SigCgt:\t0000000000000000"]


def _both(run_nspawnpy, systemd_nspawn, tree, *args):
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "--console=pipe", "-D",
                             str(tree), *args])
    ours = run_pipe(run_nspawnpy, tree, *args, check=None)
    return (theirs.returncode, theirs.stdout), (ours.returncode, ours.stdout)


@pytest.mark.parametrize("options", [("-a",), ("-a", "-U"), ("-a", "-u", "alice")],
                         ids=" ".join)
def test_stub_signal_state_is_systemd_nspawns(run_nspawnpy, systemd_nspawn, busybox_root,
                                              options):
    theirs, ours = _both(run_nspawnpy, systemd_nspawn, busybox_root, *options,
                         "/bin/sh", "-c", SIGNAL_STATE)
    assert ours == theirs
    assert ours[1].splitlines() == NSPAWN_STUB_WAITING


@pytest.mark.parametrize("script", [
    "kill -TERM 1; kill -HUP 1; kill -USR1 1; sleep 0.3; echo still-here",  # all ignored
    "kill -37 1; sleep 5; echo not-stopped",         # SIGRTMIN+3: SIGTERM+SIGHUP, power off
    "kill -47 1; trap '' TERM; sleep 5; echo x",     # SIGRTMIN+13: the same
    "trap 'echo got-term' TERM; kill -38 1; sleep 0.5; exit 7",  # SIGRTMIN+4, trapped
    "exit 5",
    "kill -KILL $$",                                 # killed: nspawn's stub exits 255
], ids=["ignored", "rtmin+3", "rtmin+13", "rtmin+4-trapped", "exit", "killed"])
def test_stub_acts_on_signals_as_systemd_nspawns(run_nspawnpy, systemd_nspawn, busybox_root,
                                                 script):
    theirs, ours = _both(run_nspawnpy, systemd_nspawn, busybox_root, "-a",
                         "/bin/sh", "-c", script)
    assert ours == theirs
