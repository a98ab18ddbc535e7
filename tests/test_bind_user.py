"""--bind-user= on this machine, against systemd-nspawn 252 (with --register=no --keep-unit it
needs no bus here): nspawn's refusals with its words and exit status, and after each of
nspawnpy's nothing left (no mount, no file added to the tree, no cgroup, no range lock); the
.nspawn file's BindUser=; what PID 1 lays out with several users. The users are those every
Debian system has: root, nobody, daemon (group daemon, home /usr/sbin), games (UID 5, group
games with GID 60) and sync (group nogroup). The comparison with users made for it, their
password hashes and a guest that resolves them, runs in the test host
(tests/test_bind_user_testhost.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import QUIET, leftovers, skip_unless

COMMON = ("--register=no", "--keep-unit", "-q", "--console=pipe")
IDS = "60514:60577"
FULL_PASSWD = "".join(f"u{uid}:x:{uid}:{uid}::/:/bin/sh\n" for uid in range(60514, 60578))


def _has_users() -> bool:
    import grp
    import pwd
    try:
        return (pwd.getpwnam("daemon").pw_gid == grp.getgrnam("daemon").gr_gid
                and grp.getgrgid(pwd.getpwnam("games").pw_gid).gr_name == "games"
                and grp.getgrgid(pwd.getpwnam("sync").pw_gid).gr_name != "sync")
    except KeyError:
        return False


pytestmark = pytest.mark.skipif(not _has_users(), reason="the Debian system users are missing")

# name: (text appended to the tree's /etc/passwd, to its /etc/group, options)
REFUSALS = {
    "root": ("", "", ("-U", "--bind-user=root")),
    "nobody": ("", "", ("-U", "--bind-user=nobody")),
    "unknown-user": ("", "", ("-U", "--bind-user=nosuchuserhere")),
    "no-private-group": ("", "", ("-U", "--bind-user=sync")),
    "uid-in-container-range": ("", "", ("--private-users=identity", "--bind-user=daemon")),
    "gid-in-container-range": ("", "", ("--private-users=6:65536", "--bind-user=games")),
    "user-in-tree": ("daemon:x:1:1::/:/bin/sh\n", "", ("-U", "--bind-user=daemon")),
    "group-in-tree": ("", "games:x:60:\n", ("-U", "--bind-user=games")),
    "range-too-small": ("", "", ("--private-users=458752:60000", "--bind-user=daemon")),
    "every-id-taken": (FULL_PASSWD, "", ("-U", "--bind-user=daemon")),
    "second-user-finds-no-id": (FULL_PASSWD.split("\n", 1)[1], "",
                                ("-U", "--bind-user=daemon", "--bind-user=games")),
    "without-user-namespace": ("", "", ("--bind-user=daemon",)),
    "comma-is-no-separator": ("", "", ("-U", "--bind-user=daemon,games")),
    "empty": ("", "", ("-U", "--bind-user=")),
}


def _messages(stderr: str) -> list[str]:
    # nspawn 252 cannot remove its propagation directory from /run on this host; nspawnpy
    # names the option after nspawn's sentence where the sentence does not.
    return [re.sub(r" \(--bind-user=\)$", "", line) for line in stderr.splitlines()
            if "Attempted to remove disk file system" not in line]


def _tree_files(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_uid, p.lstat().st_size)
            for p in [root, *root.rglob("*")]}


def _ours(found: list, root: Path) -> list:
    """leftovers() is global: what other tests running meanwhile have not yet removed is
    theirs; a cgroup of ours is named after the machine (the tree's name)."""
    return [entry for entry in found if root.name in entry]



def _range_lock(machine: str) -> Path:
    """The lock file of the UID range -U picks for this machine (hashed from its name)."""
    from nspawnpy.config.siphash import siphash24
    from nspawnpy.supervisor import userns
    hashed = siphash24(machine.encode(), userns.PICK_HASH_KEY) & 0xFFFFFFFF
    base = (hashed % (userns.PICK_MAX - userns.PICK_MIN) + userns.PICK_MIN) & 0xFFFF0000
    return Path(userns.LOCK_DIR, str(base))


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal_is_nspawns_and_leaves_nothing(busybox_root, run_nspawnpy, systemd_nspawn, case):
    passwd, group, options = REFUSALS[case]
    with open(busybox_root / "etc/passwd", "a") as f:
        f.write(passwd)
    with open(busybox_root / "etc/group", "a") as f:
        f.write(group)
    args = [*COMMON, "-D", busybox_root, *options, "/bin/true"]
    theirs = systemd_nspawn([str(a) for a in args])
    before = _tree_files(busybox_root)
    ours = run_nspawnpy(*args)
    assert (ours.returncode, _messages(ours.stderr)) == (theirs.returncode, _messages(theirs.stderr))
    assert ours.returncode == 1 and len(ours.stderr.splitlines()) == 1
    assert "--bind-user=" in ours.stderr
    assert _tree_files(busybox_root) == before
    assert not _range_lock(busybox_root.name).exists()
    assert leftovers(busybox_root.parent) == [] and _ours(leftovers(), busybox_root) == []


def test_missing_home_fails_as_in_nspawn_and_leaves_nothing(busybox_root, run_nspawnpy,
                                                             systemd_nspawn, tmp_path):
    """A home directory that is not there: nspawn's bind fails (Failed to stat HOME); the
    records already written are in the container's /run, gone with it."""
    import pwd
    missing = next((p.pw_name for p in pwd.getpwall() if not os.path.exists(p.pw_dir)
                    and 0 < p.pw_uid < 65534 and _private_group(p)), None)
    skip_unless(missing, "no user with a private group and a missing home on this host")
    args = [*COMMON, "-D", busybox_root, "-U", f"--bind-user={missing}", "/bin/true"]
    theirs = systemd_nspawn([str(a) for a in args])
    before = _tree_files(busybox_root)
    ours = run_nspawnpy(*args)
    assert (ours.returncode, _messages(ours.stderr)) == (theirs.returncode, _messages(theirs.stderr))
    assert ours.stderr.startswith("Failed to stat ")
    assert _tree_files(busybox_root) == before
    assert leftovers(busybox_root.parent) == [] and _ours(leftovers(), busybox_root) == []


def _private_group(entry) -> bool:
    import grp
    try:
        return grp.getgrgid(entry.pw_gid).gr_name == entry.pw_name
    except KeyError:
        return False


SHOW = ("cat /proc/self/uid_map /proc/self/gid_map; ls -ln /run/host/userdb | sed 1d; "
        "stat -c '%n %u %g %a' /run/host/home /run/host/userdb /run/host/home/*; "
        "cat /run/host/userdb/*.user /run/host/userdb/*.group")


def test_two_users_are_laid_out_as_by_nspawn(busybox_root, run_nspawnpy, systemd_nspawn):
    """Repeats count once; each user's own and group's host IDs are mapped."""
    args = [*COMMON, "-D", busybox_root, "-U", "--bind-user=daemon", "--bind-user=games",
            "--bind-user=daemon", "/bin/sh", "-c", SHOW]
    theirs = systemd_nspawn([str(a) for a in args], check=True)
    ours = run_nspawnpy(*args, check=True)
    assert ours.stdout == theirs.stdout
    maps = [line.split() for line in ours.stdout.splitlines()[:8]]
    assert [m[:3] for m in maps if m[1] in ("1", "5", "60")] == [
        ["60514", "1", "1"], ["60515", "5", "1"], ["60514", "1", "1"], ["60515", "60", "1"]]
    assert '{"userName":"games","uid":60515,"gid":60515,"homeDirectory":"/run/host/home/games",' \
           '"service":"io.systemd.NSpawn"}' in ours.stdout


@pytest.mark.parametrize("trusted", (True, False), ids=("trusted", "untrusted"))
def test_nspawn_file_binds_users_only_when_trusted(busybox_root, run_nspawnpy, systemd_nspawn,
                                                   trusted):
    """BindUser= takes blank-separated names; a bad one is warned about and ends the line;
    next to the tree (untrusted) it is ignored with nspawn's warning."""
    machine = busybox_root.name
    where = Path("/run/systemd/nspawn") if trusted else busybox_root.parent
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{machine}.nspawn"
    path.write_text("[Files]\nBindUser=daemon 0bad games\n")
    try:
        args = [*COMMON, "-D", busybox_root, "-U", "/bin/sh", "-c", "ls /run/host/userdb || true"]
        theirs = systemd_nspawn([str(a) for a in args], check=True)
        ours = run_nspawnpy(*args, check=True)
    finally:
        path.unlink()
    assert (ours.stdout, _messages(ours.stderr)) == (theirs.stdout, _messages(theirs.stderr))
    assert ("daemon.user" in ours.stdout) == trusted and "games" not in ours.stdout
    assert "User name '0bad' not valid" in ours.stderr   # (parsed before trust is judged)
    assert ("Ignoring bind user setting" in ours.stderr) != trusted


def test_plain_start_imports_nothing_of_bind_user(busybox_root, nspawnpy_env):
    import subprocess
    r = subprocess.run(["/usr/bin/python3", "-X", "importtime", "-m", "nspawnpy", *QUIET, "-D",
                        str(busybox_root), "/bin/true"], capture_output=True, text=True,
                       env=nspawnpy_env, check=True)
    assert "binduser" not in r.stderr and "json" not in r.stderr.split()


def test_volatile_tree_has_no_users_of_its_own(busybox_root, run_nspawnpy, systemd_nspawn):
    """--volatile=yes: the container's /etc is a fresh tmpfs, so a user of the tree's
    /etc/passwd is no collision (a merged-/usr tree, as that mode needs; an explicit range,
    as nspawn cannot ID-map a tmpfs root)."""
    import shutil
    usr = busybox_root / "usr"
    for name in ("bin", "sbin", "lib", "lib64"):
        path = busybox_root / name
        (usr / name).mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            for entry in path.iterdir():
                shutil.move(str(entry), usr / name / entry.name)
            path.rmdir()
        path.unlink(missing_ok=True)
        path.symlink_to(f"usr/{name}")
    with open(busybox_root / "etc/passwd", "a") as f:
        f.write("daemon:x:1:1::/:/bin/sh\n")
    args = [*COMMON, "-D", busybox_root, "--private-users=524288", "--volatile=yes",
            "--bind-user=daemon", "/bin/sh", "-c", "ls /run/host/userdb; cat /proc/self/uid_map"]
    theirs = systemd_nspawn([str(a) for a in args], check=True)
    ours = run_nspawnpy(*args, check=True)
    assert ours.stdout == theirs.stdout and "daemon.user" in ours.stdout


@pytest.mark.parametrize("settings", ([], ["--settings=override"]), ids=("cli-wins", "override"))
def test_command_line_and_trusted_file_take_turns_as_in_nspawn(busybox_root, run_nspawnpy,
                                                               systemd_nspawn, settings):
    path = Path("/run/systemd/nspawn") / f"{busybox_root.name}.nspawn"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[Files]\nBindUser=daemon\n")
    try:
        args = [*COMMON, "-D", busybox_root, "-U", *settings, "--bind-user=games",
                "/bin/ls", "/run/host/userdb"]
        theirs = systemd_nspawn([str(a) for a in args], check=True)
        ours = run_nspawnpy(*args, check=True)
    finally:
        path.unlink()
    assert ours.stdout.split() == theirs.stdout.split()
    assert ("daemon.user" in ours.stdout) == bool(settings) != ("games.user" in ours.stdout)


def test_range_ending_at_the_next_free_id_is_refused_where_nspawn_aborts(
        busybox_root, run_nspawnpy, systemd_nspawn):
    """A range of 60515 IDs holds 60514 but not 60515: nspawn 252 hands out 60515 anyway and
    dies on an assertion (status 255, 'Parent died too early'); nspawnpy refuses as nspawn
    does for a range too small for any. One user fits, as in nspawn."""
    r = run_nspawnpy(*COMMON, "-D", busybox_root, "--private-users=458752:60515",
                     "--bind-user=daemon", "--bind-user=games", "/bin/true")
    assert (r.returncode, r.stderr) == (1, "No suitable available UID in range 60514\u202660577 "
                                           "in container detected, can't map user. (--bind-user=)\n")
    args = [*COMMON, "-D", busybox_root, "--private-users=458752:60515", "--bind-user=daemon",
            "/bin/cat", "/proc/self/uid_map"]
    ours = run_nspawnpy(*args, check=True)
    assert ours.stdout == systemd_nspawn([str(a) for a in args], check=True).stdout
    assert ours.stdout.split() == ["0", "458752", "60514", "60514", "1", "1"]
