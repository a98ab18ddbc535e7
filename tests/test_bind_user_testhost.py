"""--bind-user= compared with systemd-nspawn 252 inside the test host, with users made there
for the test (this machine's user database is never touched): a password hash, a locked
password ('!') and none ('*'); homes with files. What the payload sees must be the same under
both tools: the UID/GID maps, /run/host/home and /run/host/userdb (names, kinds, owners,
modes, link targets, the records' exact bytes), the mounts there, and, in a Debian guest whose
nss-systemd reads the records (run as a command, and booted), the user as getent and `-u` see
it and a file it makes."""

from __future__ import annotations

import os
import re
import shutil

import pytest

import rootfs

MACHINES = "/var/lib/machines"
# name: (UID, password set with chpasswd -e, or None to keep useradd's '!')
USERS = {"bindpw": (47110, "$y$j9T$abcdefghijklmnopqrstu.$0123456789012345678901234567890123456789AB"),
         "bindlocked": (47111, None), "bindstar": (47112, "*")}
NSS_SYSTEMD = "/lib/x86_64-linux-gnu/libnss_systemd.so.2"
PROBE = r"""
cat /proc/self/uid_map /proc/self/gid_map
for p in /run/host/home /run/host/userdb /run/host/home/* /run/host/home/*/* /run/host/userdb/*; do
    echo "$p $(stat -c '%F %u %g %a' $p) $(readlink $p)"
done
for f in /run/host/userdb/*; do echo "== $f"; cat $f; done
grep -E ' /run/host/(home|userdb)' /proc/self/mountinfo
"""


@pytest.fixture(scope="module")
def host(testhost):
    made = []
    try:
        for name, (uid, password) in USERS.items():
            testhost.run(["useradd", "--create-home", "--user-group", "-u", str(uid), name])
            made.append(name)
            if password is not None:
                testhost.run(["chpasswd", "-e"], input=f"{name}:{password}\n")
            testhost.run(["sh", "-c", f"echo hi > /home/{name}/note && chown {uid}:{uid} "
                                      f"/home/{name}/note && chmod 640 /home/{name}/note"])
        yield testhost
    finally:
        for name in made:
            testhost.run(["userdel", "--force", "--remove", name], check=False)


@pytest.fixture
def busybox(host):
    tree = rootfs.busybox_tree(host.root / MACHINES.lstrip("/") / "bindbb")
    yield f"{MACHINES}/bindbb"
    rootfs.rmtree(tree)


def run(host, tool: str, tree: str, *options: str, script: str = PROBE):
    """The tool in a unit of the test host (--keep-unit needs one); PID 1 expands $."""
    return host.run(["systemd-run", "--wait", "--pipe", "--collect", "-q", "-p", "Delegate=yes",
                     "--", tool, "--register=no", "--keep-unit", "-q", "-D", tree, *options,
                     "/bin/sh", "-c", script.replace("$", "$$")], check=False, timeout=120)


def normalised(text: str) -> str:
    """Mount and peer group IDs are the kernel's counters, new for every run: they are
    replaced by the order they first appear in."""
    seen: dict = {}

    def number(m):
        return m.group(1) + seen.setdefault(m.group(2), str(len(seen)))
    lines = []
    for line in text.splitlines():
        if " - " in line and line.split()[0].isdigit():
            line = re.sub(r"^(\d+) (\d+)", lambda m: "ID PARENT", line)
            line = re.sub(r"((?:shared|master):)(\d+)", number, line)
        lines.append(line)
    return "\n".join(lines)


def probed_alike(host, tree: str, *options: str) -> str:
    """PROBE's output under nspawnpy, once seen to be nspawn's."""
    theirs = run(host, "systemd-nspawn", tree, *options)
    ours = run(host, "nspawnpy", tree, *options)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stderr) == (0, "")
    assert normalised(ours.stdout) == normalised(theirs.stdout)
    return ours.stdout


def test_two_made_users_are_seen_as_under_nspawn(host, busybox):
    out = probed_alike(host, busybox, "-U", "--bind-user=bindpw", "--bind-user=bindlocked")
    assert re.search(r"^ +60514 +47110 +1$", out, re.M) and re.search(r"^ +60515 +47111 +1$", out, re.M)
    assert "/run/host/home/bindpw/note regular file 60514 60514 640" in out
    assert f'{{"privileged":{{"hashedPassword":["{USERS["bindpw"][1]}"]}}}}' in out
    assert '{"privileged":{"hashedPassword":["!"]}}' in out
    assert "/run/host/userdb/60514.user symbolic link 0 0 777 bindpw.user" in out


def test_no_privileged_record_without_a_hash_and_the_tree_under_chown(host, busybox):
    out = probed_alike(host, busybox, "--private-users=pick", "--private-users-ownership=chown",
                       "--bind-user=bindstar")
    assert "privileged" not in out and "bindstar.user" in out


def test_name_taken_in_the_guest_is_refused_as_by_nspawn(host, busybox):
    with open(host.root / MACHINES.lstrip("/") / "bindbb/etc/passwd", "a") as f:
        f.write("bindpw:x:1234:1234::/:/bin/sh\n")
    theirs = run(host, "systemd-nspawn", busybox, "-U", "--bind-user=bindpw", script="true")
    ours = run(host, "nspawnpy", busybox, "-U", "--bind-user=bindpw", script="true")
    assert theirs.returncode == ours.returncode == 1
    assert ours.stderr == theirs.stderr.replace("\n", " (--bind-user=)\n") \
        == "Sorry, the user 'bindpw' already exists in the container. (--bind-user=)\n"


@pytest.fixture
def debian(host):
    """A Debian guest whose nss-systemd (copied from this machine, the same systemd 252: the
    cached tree lacks the package) resolves the records in /run/host/userdb."""
    if not os.path.exists(NSS_SYSTEMD):
        pytest.skip("libnss-systemd is not installed on this machine")
    tree = rootfs.debian_tree(host.root / MACHINES.lstrip("/") / "binddeb")
    shutil.copy2(NSS_SYSTEMD, tree / NSS_SYSTEMD.lstrip("/"))
    conf = tree / "etc/nsswitch.conf"
    conf.write_text(re.sub(r"^(passwd|group|shadow):.*$", r"\1: files systemd",
                           conf.read_text(), flags=re.M))
    yield f"{MACHINES}/binddeb"
    rootfs.rmtree(tree)


def test_debian_guest_resolves_the_user_and_its_files_are_its_own(host, debian):
    as_user = ("-U", "--bind-user=bindpw", "-u", "bindpw", "--chdir=/run/host/home/bindpw")
    script = ("id; pwd; echo $HOME $USER; getent passwd bindpw; getent group bindpw; "
              "cat note; touch made; stat -c '%u %g' made")
    note = host.root / "home/bindpw/made"
    outcomes = []
    for tool in ("systemd-nspawn", "nspawnpy"):
        r = run(host, tool, debian, *as_user, script=script)
        outcomes.append((r.returncode, r.stdout, r.stderr, note.stat().st_uid, note.stat().st_gid))
        note.unlink()
    assert outcomes[0][0] == 0, outcomes[0]
    assert outcomes[1] == outcomes[0]
    assert outcomes[1][1].splitlines()[:4] == [
        "uid=60514(bindpw) gid=60514(bindpw) groups=60514(bindpw)", "/run/host/home/bindpw",
        "/run/host/home/bindpw bindpw", "bindpw:x:60514:60514:bindpw:/run/host/home/bindpw:/bin/bash"]
    assert outcomes[1][3:] == (47110, 47110)
    root = [run(host, tool, debian, "-U", "--bind-user=bindpw",
                script="getent shadow bindpw | cut -d: -f1,2") for tool in ("systemd-nspawn", "nspawnpy")]
    assert root[1].stdout == root[0].stdout == f"bindpw:{USERS['bindpw'][1]}\n"


def test_user_without_a_group_entry_is_refused_as_by_nspawn(host, busybox):
    passwd = host.root / "etc/passwd"
    saved = passwd.read_text()
    passwd.write_text(saved + "bindorphan:x:47113:47999::/home/bindorphan:/bin/sh\n")
    try:
        outcomes = [run(host, tool, busybox, "-U", "--bind-user=bindorphan", script="true")
                    for tool in ("systemd-nspawn", "nspawnpy")]
    finally:
        passwd.write_text(saved)
    theirs, ours = outcomes
    assert theirs.returncode == ours.returncode == 1
    assert ours.stderr == theirs.stderr.replace("\n", " (--bind-user=)\n"), (theirs.stderr, ours.stderr)
    assert ours.stderr.startswith("Failed to resolve group of user 'bindorphan': ")


GUEST_LEADER = ("for p in $(pgrep -x systemd); do "
                "[ $(readlink /proc/$p/ns/pid) != $(readlink /proc/1/ns/pid) ] && "
                "grep -q /{unit} /proc/$p/cgroup && echo $p; done")


def test_booted_debian_guest_resolves_the_user_as_under_nspawn(host, debian):
    seen = []
    for tool in ("systemd-nspawn", "nspawnpy"):
        unit = f"bindboot-{tool}.service"
        try:
            host.run(["systemd-run", "-q", f"--unit={unit}", "-p", "Delegate=yes", "--", tool,
                      "--register=no", "--keep-unit", "-q", "-b", "-U", "--bind-user=bindpw",
                      "-D", debian])
            leader = host.wait_until(GUEST_LEADER.format(unit=unit)).split()[0]
            guest = ["nsenter", "-t", leader, "-a"]
            host.wait_until(f"{' '.join(guest)} systemctl is-system-running | "
                            "grep -Eqx 'running|degraded'", timeout=60)
            seen.append(host.run([*guest, "sh", "-c", "getent passwd bindpw; getent group bindpw; "
                                  "stat -c '%u %g %a' /run/host/home/bindpw/note"]).stdout)
            # (from inside: stopping the unit signals every process in it, the guest's too)
            host.run([*guest, "systemctl", "poweroff"])
            host.wait_until(f"! systemctl is-active -q {unit}", timeout=30)
        finally:
            host.stop_unit(unit)
    assert seen[1] == seen[0]
    assert seen[1].splitlines() == ["bindpw:x:60514:60514:bindpw:/run/host/home/bindpw:/bin/bash",
                                    "bindpw:x:60514:", "60514 60514 640"]
