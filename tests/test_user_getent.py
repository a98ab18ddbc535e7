"""--user= is resolved as systemd-nspawn 252 resolves it: through the container's own getent
(passwd, then initgroups), never by reading its files; compared with systemd-nspawn on trees
whose getent says what each case needs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import run_pipe

PROBE = ("/bin/sh", "-c", "id; echo HOME=$HOME USER=$USER LOGNAME=$LOGNAME; "
         "ls -ldn /made /made/home /relative /home/alice 2>/dev/null | cut -c1-34")
STATIC_GETENT = """#!/bin/sh
echo noise-on-stderr >&2
if [ "$1" = passwd ]; then echo '{passwd}'; exit {passwd_status}; fi
if [ "$1" = initgroups ]; then echo '{groups}'; exit {groups_status}; fi
exit 2
"""
ALICE = "alice:x:1000:1000:Alice:/home/alice:/bin/sh"
# (passwd line, initgroups line, passwd exit status, initgroups exit status)
CASES = {
    "plain": (ALICE, "alice 1000 10", 0, 0),
    "no-colon": ("alice", "alice 1000", 0, 0),
    "no-password": ("alice:x", "alice 1000", 0, 0),
    "no-uid": ("alice:x:1000", "alice 1000", 0, 0),
    "no-gid": ("alice:x:1000:1000", "alice 1000", 0, 0),
    "no-gecos": ("alice:x:1000:1000:", "alice 1000", 0, 0),
    "no-home-end": ("alice:x:1000:1000::/home/alice", "alice 1000", 0, 0),
    "empty-line": ("", "alice 1000", 0, 0),
    "bad-uid": ("alice:x:abc:1000::/home/alice:", "alice 1000", 0, 0),
    "uid-65535": ("alice:x:65535:1000::/home/alice:", "alice 1000", 0, 0),
    "uid-leading-zero": ("alice:x:01000:1000::/home/alice:", "alice 1000", 0, 0),
    "bad-gid": ("alice:x:1000:-1::/home/alice:", "alice 1000", 0, 0),
    "bad-group": (ALICE, "alice 1000 abc", 0, 0),
    "no-groups": (ALICE, "alice", 0, 0),
    "more-groups": (ALICE, "alice 1000 10 20", 0, 0),
    "passwd-status": (ALICE, "alice 1000", 3, 0),
    "initgroups-status": (ALICE, "alice 1000", 0, 4),
    "name-not-checked": ("bob:x:1000:1000::/home/alice:", "bob 1000", 0, 0),
    "empty-home": ("alice:x:1000:1000:::", "alice 1000", 0, 0),
    "home-with-parents": ("alice:x:1000:1000::/made/home:", "alice 1000", 0, 0),
    "relative-home": ("alice:x:1000:1000::relative:", "alice 1000", 0, 0),
    "uid-0": ("alice:x:0:0::/root:", "alice 0", 0, 0),
}


def _outcome(r):
    """Status and what both tools print (nspawn's run-directory noise on this host aside)."""
    lines = [line for line in (r.stdout + r.stderr).splitlines()
             if "Attempted to remove disk file system" not in line]
    return r.returncode, lines


def _copy(tree, dest):
    subprocess.run(["cp", "-a", str(tree), str(dest)], check=True)  # owners too


def _both(run_nspawnpy, systemd_nspawn, tree, *args):
    """Each tool on the tree as it is now (made again for the second run)."""
    snapshot = tree.parent / "pristine"
    _copy(tree, snapshot)
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "--console=pipe", "-D",
                             str(tree), *args])
    shutil.rmtree(tree)
    snapshot.rename(tree)
    ours = run_pipe(run_nspawnpy, tree, *args, check=None)
    return _outcome(theirs), _outcome(ours)


@pytest.mark.parametrize("case", list(CASES))
def test_user_resolved_through_getent_as_systemd_nspawn(run_nspawnpy, systemd_nspawn,
                                                        busybox_root, case):
    passwd, groups, passwd_status, groups_status = CASES[case]
    (busybox_root / "usr/bin/getent").write_text(STATIC_GETENT.format(
        passwd=passwd, groups=groups, passwd_status=passwd_status, groups_status=groups_status))
    theirs, ours = _both(run_nspawnpy, systemd_nspawn, busybox_root, "-u", "alice", *PROBE)
    assert ours == theirs


@pytest.mark.parametrize("user", ["alice", "1000", "nobody-here", "0", "root"])
@pytest.mark.parametrize("getent", ["getent", "no-getent", "bin-getent"])
def test_users_by_name_and_number_with_and_without_getent(run_nspawnpy, systemd_nspawn,
                                                          busybox_root, user, getent):
    # the fixture's getent reads the tree's passwd/group, by name or number; nspawn runs
    # /usr/bin/getent, else /bin/getent; without either only root works
    if getent == "no-getent":
        (busybox_root / "usr/bin/getent").unlink()
    elif getent == "bin-getent":
        os.rename(busybox_root / "usr/bin/getent", busybox_root / "bin/getent")
    theirs, ours = _both(run_nspawnpy, systemd_nspawn, busybox_root, "-u", user, *PROBE)
    assert ours == theirs
    assert (ours[0] == 0) == (user in ("0", "root") or (getent != "no-getent" and
                                                         user == "alice"))


def test_getent_runs_with_what_systemd_nspawns_gets(run_nspawnpy, systemd_nspawn, busybox_root):
    """Its environment and descriptors (stdin and stderr on /dev/null, nothing of PID 1)."""
    (busybox_root / "usr/bin/getent").write_text(
        "#!/bin/sh\n"
        "env | sort > /seen-env-$1\n"
        "ls -l /proc/$$/fd | sed -n 's/.* \\([0-9]* -> [^:[]*\\).*/\\1/p' > /seen-fds-$1\n"
        f"echo '{ALICE}'\n")
    seen = {}
    for tool in ("nspawn", "nspawnpy"):
        tree = busybox_root.parent / f"{tool}-tree"
        _copy(busybox_root, tree)
        args = ["--console=pipe", "-D", str(tree), "-u", "alice", "/bin/true"]
        if tool == "nspawn":
            r = systemd_nspawn(["--register=no", "--keep-unit", "-q", *args])
        else:
            r = run_nspawnpy("--register=no", "-q", *args)
        assert r.returncode == 0, r.stderr
        seen[tool] = {name: (tree / name).read_text() for name in
                      ("seen-env-passwd", "seen-fds-passwd", "seen-env-initgroups")}
        shutil.rmtree(tree)
    assert seen["nspawnpy"] == seen["nspawn"]
    # (10: the script busybox's sh reads)
    assert set(seen["nspawn"]["seen-fds-passwd"].splitlines()) == {
        "0 -> /dev/null", "1 -> pipe", "2 -> /dev/null", "10 -> /usr/bin/getent"}
