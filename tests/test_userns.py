"""-U / --private-users= and --private-users-ownership=: the UID range the container
gets, how the tree's ownership is made to fit it, and that nothing is left afterwards."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, leftovers, spawn, wait_for
from nspawnpy.config.siphash import siphash24

PYTHON = "/usr/bin/python3"
QUIET = ("--register=no", "-q", "--console=pipe")
LOCKS = Path("/run/systemd/nspawn-uid")   # shared with systemd-nspawn
SHOW = "cat /proc/self/uid_map; id -u; stat -c '%u:%g' /bin/busybox"


def run(root, *args, timeout=60):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([PYTHON, "-m", "nspawnpy", *QUIET, "-D", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def hashed_base(machine: str) -> int:
    """nspawn's first pick for a machine name."""
    key = bytes.fromhex("e156e0f04af041af9641cf413394ff72")
    candidate = siphash24(machine.encode(), key) & 0xFFFFFFFF
    return (candidate % (0x6FFF0000 - 0x80000) + 0x80000) & 0xFFFF0000


def show(root, *options):
    r = run(root, *options, "/bin/sh", "-c", SHOW)
    assert r.returncode == 0, r.stderr
    inside, base, size = r.stdout.splitlines()[0].split()
    uid, owner = r.stdout.splitlines()[1:3]
    return int(inside), int(base), int(size), uid, owner


def host_owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def no_locks(*bases: int) -> bool:
    """No lock file left for these bases (the directory is shared with every nspawn and
    nspawnpy on the machine, so only the ranges a test used can be checked)."""
    return not any((LOCKS / str(base)).exists() for base in bases)




def uid_map_of(pid: int) -> str:
    return Path(f"/proc/{pid}/uid_map").read_text().split()


def container_pid(supervisor: int, comm: str) -> int:
    def find():
        for task in Path(f"/proc/{supervisor}/task").iterdir():
            for child in (task / "children").read_text().split():
                if Path(f"/proc/{child}/comm").read_text().strip() == comm:
                    return int(child)
                for grandchild in Path(f"/proc/{child}/task/{child}/children").read_text().split():
                    if Path(f"/proc/{grandchild}/comm").read_text().strip() == comm:
                        return int(grandchild)
        return None
    found = []
    wait_for(lambda: found.append(find()) or found[-1])
    return found[-1]


def test_U_picks_the_range_hashed_from_the_machine_name_and_maps_the_tree(busybox_root):
    inside, base, size, uid, owner = show(busybox_root, "-U")
    assert (inside, base, size) == (0, hashed_base(busybox_root.name), 65536)
    assert uid == "0" and owner == "0:0"
    assert host_owner(busybox_root / "bin/busybox") == (0, 0)   # map: the tree is unchanged
    assert host_owner(busybox_root) == (0, 0)
    assert leftovers() == [] and no_locks(base)


def test_chown_ownership_shifts_the_tree_into_the_range_once(busybox_root):
    options = ("--private-users=pick", "--private-users-ownership=chown")
    _, base, _, uid, owner = show(busybox_root, *options)
    assert uid == "0" and owner == "0:0"
    assert host_owner(busybox_root) == (base, base)
    assert host_owner(busybox_root / "bin/busybox") == (base, base)
    assert host_owner(busybox_root / "bin/sh") == (base, base)   # symlinks too
    # The tree's owner now says which range it is in: pick keeps it, and auto chowns.
    _, again, _, _, owner = show(busybox_root, "-U")
    assert again == base and owner == "0:0"
    assert leftovers() == [] and no_locks(base)


def test_identity_maps_the_first_64k_ids_onto_themselves(busybox_root):
    assert show(busybox_root, "--private-users=identity") == (0, 0, 65536, "0", "0:0")


def test_an_explicit_range_is_used_as_given_and_leaves_the_tree_alone(busybox_root):
    inside, base, size, uid, owner = show(busybox_root, "--private-users=1000000:65536")
    assert (inside, base, size, uid) == (0, 1000000, 65536, "0")
    assert owner == "65534:65534"   # host root is not mapped: nobody, as with nspawn
    assert host_owner(busybox_root / "bin/busybox") == (0, 0)


def test_yes_takes_the_range_from_the_owner_of_the_tree(busybox_root):
    os.chown(busybox_root, 0x30000 + 5, 0x30000 + 5)
    inside, base, size, _, _ = show(busybox_root, "--private-users=yes")
    assert (base, size) == (0x30000, 65536)


def test_the_container_is_root_of_its_files_dev_and_run_host(busybox_root):
    r = run(busybox_root, "-U", "/bin/sh", "-c",
            "echo x > /dev/null && cat /dev/zero | head -c 3 | wc -c; stat -c '%u %n' /run/host/notify "
            "/run/host/container-manager /tmp; touch /root/made-inside; ls /sys/kernel >/dev/null && echo sys")
    assert r.returncode == 0, r.stderr
    # container-manager is written by the set-up process as the host's root: nobody, as in nspawn
    assert r.stdout.split() == ["3", "0", "/run/host/notify", "65534", "/run/host/container-manager",
                                "0", "/tmp", "sys"]
    assert host_owner(busybox_root / "root/made-inside") == (0, 0)  # through the ID-mapped root


def test_two_containers_of_the_same_name_get_different_ranges(busybox_root, tmp_path):
    import shutil
    other = tmp_path / "other"
    shutil.copytree(busybox_root, other, symlinks=True)
    first = spawn(busybox_root, "--console=pipe", "-U", "-M", "twin", "/bin/sleep", "100")
    try:
        sleeper = container_pid(first.pid, "sleep")
        first_base = int(uid_map_of(sleeper)[1])
        assert first_base == hashed_base("twin")
        _, second_base, _, _, owner = show(other, "-U", "-M", "twin")
        assert second_base != first_base and second_base % 65536 == 0 and owner == "0:0"
        assert 0x80000 <= second_base <= 0x6FFF0000
    finally:
        first.kill()
        first.wait()
    wait_for(lambda: leftovers() == [] and no_locks(first_base, second_base))


def test_nothing_is_left_after_the_supervisor_is_killed(busybox_root):
    p = spawn(busybox_root, "--console=pipe", "-U", "/bin/sleep", "100")
    base = hashed_base(busybox_root.name)
    try:
        container_pid(p.pid, "sleep")
        assert (LOCKS / str(base)).exists()
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wait_for(lambda: leftovers() == [] and no_locks(base), timeout=15)


def test_debian_boots_to_running_with_U(debian_root):
    p = spawn(debian_root, "--console=pipe", "-U", "-b")
    try:
        leader = container_pid(p.pid, "systemd")
        assert uid_map_of(leader)[:3] == ["0", str(hashed_base(debian_root.name)), "65536"]

        def state():
            r = subprocess.run(["nsenter", "-t", str(leader), "-a", "systemctl", "is-system-running"],
                               capture_output=True, text=True)
            return r.stdout.strip() in ("running", "degraded")
        wait_for(state, timeout=60, step=0.3)
        assert host_owner(debian_root / "etc/passwd") == (0, 0)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wait_for(lambda: leftovers() == [] and no_locks(hashed_base(debian_root.name)), timeout=15)


@pytest.mark.parametrize("options, expect", [
    (["--private-users=4294967000:65536"], "--private-users"),
    (["--private-users=65536:10", "--private-users-ownership=chown"], "multiples of 2^16"),
    (["--private-users=pick", "--private-users-ownership=map", "--uid-gid-mismatch"],
     "don't match"),
])
def test_bad_ranges_fail_with_one_line(busybox_root, options, expect):
    if "--uid-gid-mismatch" in options:
        options = [o for o in options if o != "--uid-gid-mismatch"]
        os.chown(busybox_root, 0x30000, 0x40000)
    r = run(busybox_root, *options, "/bin/true")
    assert r.returncode == 1
    assert expect in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert no_locks(hashed_base(busybox_root.name))


def _nspawn_holding_range(root: Path, cgroup):
    """systemd-nspawn -U running a sleep in *root*, started from *cgroup*."""
    from testhost import systemd_nspawn
    return subprocess.Popen([systemd_nspawn(), "--register=no", "--keep-unit", "-q", "-U",
                             "-D", str(root), "/bin/sleep", "100"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=cgroup.enter)


def test_nspawn_and_nspawnpy_never_hand_out_the_same_range(busybox_root, tmp_path):
    """Both trees are owned by one free range, which both tools try first: whoever holds
    it, the other must pick another one (nspawn's lock files and lock kind)."""
    import secrets
    import shutil
    from testhost import ScratchCgroup, clean_nspawn_runtime, systemd_nspawn
    if systemd_nspawn() is None:
        pytest.skip("systemd-nspawn is not installed (systemd-container)")
    base = (0x100 + secrets.randbelow(0x6000)) << 16
    other = tmp_path / f"ours-{secrets.token_hex(3)}"
    shutil.copytree(busybox_root, other, symlinks=True)
    for tree in (busybox_root, other):
        os.chown(tree, base, base)
    cgroup = ScratchCgroup("uidlock")
    try:
        nspawn = _nspawn_holding_range(busybox_root, cgroup)
        try:
            wait_for(lambda: (LOCKS / str(base)).exists(), what="nspawn's range lock")
            _, ours, _, _, _ = show(other, "-U")
            assert ours != base and ours % 65536 == 0
        finally:
            nspawn.terminate()   # SIGKILL would leave nspawn's lock file behind
            nspawn.wait(timeout=30)
            cgroup.kill_all()
            clean_nspawn_runtime(busybox_root.name)
        wait_for(lambda: no_locks(base), what="nspawn's lock to go")
        for tree in (busybox_root, other):
            os.chown(tree, base, base)
        mine = spawn(other, "--console=pipe", "-U", "/bin/sleep", "100")
        try:
            sleeper = container_pid(mine.pid, "sleep")
            assert int(uid_map_of(sleeper)[1]) == base
            r = subprocess.run([systemd_nspawn(), "--register=no", "--keep-unit", "-q", "-U",
                                "-D", str(busybox_root), "/bin/cat", "/proc/self/uid_map"],
                               capture_output=True, text=True, timeout=60, preexec_fn=cgroup.enter)
            clean_nspawn_runtime(busybox_root.name)
            assert r.returncode == 0, r.stderr
            theirs = int(r.stdout.split()[1])
            assert theirs != base and theirs % 65536 == 0
        finally:
            mine.kill()
            mine.wait()
    finally:
        cgroup.remove()
    wait_for(lambda: leftovers() == [] and no_locks(base), timeout=15)


def test_U_binds_a_host_source_that_only_host_root_can_reach(busybox_root, systemd_nspawn):
    """A --bind source inside a 0700 directory: nspawn binds it as the host's root; our PID 1
    opens it before it becomes the namespace's root (which may not enter that directory)."""
    private = busybox_root.parent / "private"
    (private / "src").mkdir(parents=True)
    private.chmod(0o700)
    (private / "src/file").write_text("seen\n")
    show = ["-U", f"--bind-ro={private / 'src'}:/mnt/src", "/bin/cat", "/mnt/src/file"]
    ours = run(busybox_root, *show)
    assert (ours.returncode, ours.stdout) == (0, "seen\n"), ours.stderr
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "-D", str(busybox_root), *show])
    assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout)
    assert leftovers(busybox_root.parent) == []
