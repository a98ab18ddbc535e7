"""`machinectl bind` on nspawnpy machines: the mount-propagation tunnel between the host's
/run/systemd/nspawn/propagate/NAME and the container's /run/host/incoming (supervisor/propagate.py),
checked inside the test host with the real machined; and that runs which do not register
leave nothing of it behind."""

from __future__ import annotations

import pytest

import rootfs
from conftest import leftovers

MACHINES = "/var/lib/machines"
PROPAGATE = "/run/systemd/nspawn/propagate"


@pytest.fixture(scope="module")
def host(testhost):
    testhost.install_units()
    return testhost


def propagate_mounts(mountinfo: str) -> list[str]:
    """Mount lines whose mount point is below the propagate directory."""
    return [line for line in mountinfo.splitlines()
            if line.split()[4].startswith(PROPAGATE + "/")]


def start_guest(host, name: str, unit: str) -> str:
    """Start a registered busybox guest under a Delegate=yes service; its leader PID."""
    rootfs.busybox_tree(host.root / MACHINES.lstrip("/") / name)
    host.run(["systemd-run", "-q", f"--unit={unit}", "-p", "Delegate=yes", "nspawnpy", "-q",
              "-D", f"{MACHINES}/{name}", "-M", name, "/bin/sleep", "300"])
    host.wait_until(f"machinectl show {name} -p State --value | grep -qx running", timeout=20)
    return host.run(["machinectl", "show", name, "-p", "Leader", "--value"]).stdout.strip()


def inside(host, leader: str, script: str, check=True):
    return host.run(["nsenter", "-t", leader, "-m", "-p", "-r", "-w", "/bin/sh", "-c", script],
                    check=check)


def test_bind_read_write_and_read_only_and_the_tunnel_is_gone_afterwards(host):
    name, unit = "bbind", "bindtest.service"
    host.run("mkdir -p /srv/data && echo hello >/srv/data/file && rm -f /srv/data/new")
    leader = start_guest(host, name, unit)
    try:
        # The tunnel while the machine runs, as nspawn makes it: a directory on the host
        # (the host's shared / carries machined's mounts), a read-only slave at
        # /run/host/incoming inside (the first line; propagation leaves a hidden copy below).
        host.run(f"test -d {PROPAGATE}/{name}")
        incoming = [m for m in inside(host, leader, "cat /proc/self/mountinfo").stdout.splitlines()
                    if " /run/host/incoming " in m]
        assert incoming and "master:" in incoming[0] and "shared:" not in incoming[0]
        assert "ro" in incoming[0].split()[5].split(",")

        host.run(["machinectl", "bind", "--mkdir", name, "/srv/data", "/mnt/data"])
        assert inside(host, leader, "cat /mnt/data/file").stdout == "hello\n"
        inside(host, leader, "echo written >/mnt/data/new")
        assert host.run("cat /srv/data/new").stdout == "written\n"

        host.run(["machinectl", "bind", "--read-only", "--mkdir", name, "/srv/data", "/mnt/ro"])
        assert inside(host, leader, "cat /mnt/ro/file").stdout == "hello\n"
        r = inside(host, leader, "touch /mnt/ro/other", check=False)
        assert r.returncode != 0 and "Read-only" in r.stderr

        # One argument: the same path inside.
        host.run(["machinectl", "bind", "--mkdir", name, "/srv/data"])
        assert inside(host, leader, "cat /srv/data/file").stdout == "hello\n"

        # machined cleans its staging mounts up: the tunnel is empty again.
        assert inside(host, leader, "ls -A /run/host/incoming").stdout == ""
        assert host.run(f"ls -A {PROPAGATE}/{name}").stdout == ""
    finally:
        host.stop_unit(unit)
    host.wait_until(f"! test -e {PROPAGATE}/{name}", timeout=15)
    assert propagate_mounts(host.run("cat /proc/self/mountinfo").stdout) == []


def test_booted_debian_guest_services_see_binds_made_after_they_started(host):
    """The container's mounts are shared (as nspawn makes them): a guest service with a mount
    namespace of its own (PrivateTmp=) sees what machinectl binds in after it started."""
    name, unit = "debbind", "debbind.service"
    rootfs.debian_tree(host.root / MACHINES.lstrip("/") / name)
    host.run("mkdir -p /srv/data && echo hello >/srv/data/file")
    host.run(["systemd-run", "-q", f"--unit={unit}", "-p", "Delegate=yes", "nspawnpy", "-q",
              "-b", "-D", f"{MACHINES}/{name}", "-M", name])
    try:
        host.wait_until(f"systemctl -M {name} is-system-running --wait | "
                        "grep -Eq 'running|degraded'", timeout=60)
        host.run(["systemd-run", "-M", name, "-q", "--unit=viewer", "-p", "PrivateTmp=yes",
                  "/bin/sleep", "3141"])
        viewer = host.wait_until("pgrep -fx '/bin/sleep 3141'").split()[0]
        host.run(["machinectl", "bind", "--mkdir", name, "/srv/data", "/mnt/data"])
        out = host.run(["nsenter", "-t", viewer, "-m", "-p", "-r", "-w", "/bin/cat",
                        "/mnt/data/file"]).stdout
        assert out == "hello\n"
        out = host.run(["systemd-run", "-M", name, "--wait", "--pipe", "-q",
                        "/bin/cat", "/mnt/data/file"]).stdout
        assert out == "hello\n"
    finally:
        host.run(["machinectl", "terminate", name], check=False)
        host.wait_until(f"! systemctl is-active -q {unit}", timeout=30)
        host.stop_unit(unit)
    host.wait_until(f"! test -e {PROPAGATE}/{name}", timeout=15)
    assert propagate_mounts(host.run("cat /proc/self/mountinfo").stdout) == []


def test_tunnel_is_removed_after_the_supervisor_is_killed(host):
    name, unit = "bbkill", "bindkill.service"
    leader = start_guest(host, name, unit)
    try:
        host.run(f"test -d {PROPAGATE}/{name}")
        supervisor = host.run(["ps", "-o", "ppid=", "-p", leader]).stdout.strip()
        host.run(["kill", "-KILL", supervisor])
        host.wait_until(f"! test -e {PROPAGATE}/{name}", timeout=40)
        assert propagate_mounts(host.run("cat /proc/self/mountinfo").stdout) == []
    finally:
        host.run(["machinectl", "kill", name, "-s", "KILL"], check=False)
        host.stop_unit(unit)


def test_every_container_has_incoming_and_the_host_end_goes_away(host):
    """nspawn gives every container /run/host/incoming, registered or not, with -U or not;
    nspawnpy removes the host end when the container is gone."""
    rootfs.busybox_tree(host.root / MACHINES.lstrip("/") / "bbnoreg")
    for options in ("--register=no", "--register=no -U", "-U"):
        r = host.run(f"nspawnpy -q --console=pipe {options} -D {MACHINES}/bbnoreg "
                     "/bin/sh -c 'test -d /run/host/incoming && echo incoming; true'")
        assert r.stdout == "incoming\n", options
        assert host.run(f"ls -A {PROPAGATE} 2>/dev/null || true").stdout == "", options


def test_plain_runs_here_leave_no_tunnel(run_nspawnpy, busybox_root):
    """On this machine there is no machined: a registering run fails, the --register=no run
    works (with /run/host/incoming, as nspawn's), and neither leaves a directory or mount
    under the propagate path."""
    import os
    name = f"bbtunnel-{os.getpid()}"   # other runs on this machine come and go meanwhile
    r = run_nspawnpy("-q", "-D", busybox_root, "-M", name, "/bin/true")
    assert r.returncode == 1 and "Failed to register machine" in r.stderr
    assert not os.path.lexists(f"{PROPAGATE}/{name}")
    r = run_nspawnpy("--register=no", "-q", "-D", busybox_root, "-M", name, "/bin/sh", "-c",
                     "test -d /run/host/incoming && echo incoming", check=True)
    assert r.stdout == "incoming\n"
    assert not os.path.lexists(f"{PROPAGATE}/{name}")
    with open("/proc/self/mountinfo") as f:
        assert [m for m in propagate_mounts(f.read()) if name in m] == []
    assert leftovers(busybox_root.parent) == []


def test_two_runs_of_one_name_share_the_tunnel_and_the_last_one_out_removes_it(busybox_root):
    """--register=no lets two trees run under one name: both get /run/host/incoming, the
    one that ends first leaves the other's host end in place (nspawn 252 removes it under
    the other), and once both are gone nothing is left. Then the same with both started at
    once, a few rounds (the first one's removal racing the second one's bind)."""
    import os
    import time
    from conftest import spawn, stop
    name = f"bbshared-{os.getpid()}"
    other = rootfs.busybox_tree(busybox_root.parent / "other")
    host_end = f"{PROPAGATE}/{name}"
    check = "test -d /run/host/incoming && echo incoming"
    first = spawn(busybox_root, "--console=pipe", "-M", name, "/bin/sh", "-c",
                  f"touch /started; while [ ! -e /go ]; do sleep 0.05; done; {check}")
    try:
        deadline = time.monotonic() + 30
        while not (busybox_root / "started").exists() and first.poll() is None:
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        inode = os.stat(host_end).st_ino
        second = spawn(other, "--console=pipe", "-M", name, "/bin/sh", "-c", check)
        assert second.communicate(timeout=60) == ("incoming\n", "")
        assert second.returncode == 0
        assert os.stat(host_end).st_ino == inode, "the second run removed the first one's tunnel"
        (busybox_root / "go").touch()
        assert first.communicate(timeout=60) == ("incoming\n", "")
        assert first.returncode == 0
    finally:
        (busybox_root / "go").touch()
        stop(first)
    assert not os.path.lexists(host_end)
    for _ in range(3):
        runs = [spawn(tree, "--console=pipe", "-M", name, "/bin/sh", "-c", check)
                for tree in (busybox_root, other)]
        assert [r.communicate(timeout=60) for r in runs] == [("incoming\n", "")] * 2
        assert [r.returncode for r in runs] == [0, 0]
        assert not os.path.lexists(host_end)
    with open("/proc/self/mountinfo") as f:
        assert [m for m in propagate_mounts(f.read()) if name in m] == []
    assert leftovers(busybox_root.parent) == []
