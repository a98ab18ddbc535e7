"""Issue 5 on a pure cgroup v2 host: a second test host booted with
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (cgroup2 at /sys/fs/cgroup, no v1 mounts), and in it a
booted Debian guest whose systemd runs with a cgroup tree of its own, under a transient unit
and under nspawnpy@.service, plus a plain command."""

from __future__ import annotations


import pytest

import rootfs
from conftest import booted_testhost, leftovers

MACHINES = "/var/lib/machines"


@pytest.fixture(scope="module")
def host():
    """A test host in pure cgroup v2 mode, for this module only (one boot, torn down after)."""
    boot = booted_testhost("thv", unified=True)
    th = next(boot)
    th.install_units()
    yield th
    next(boot, None)  # stops it; fails on what its teardown found
    assert not th.workdir.exists()
    assert leftovers() == []


def debian_guest(host, name: str) -> None:
    rootfs.debian_tree(host.root / MACHINES.lstrip("/") / name)


def show(host, unit: str, *props: str) -> dict:
    out = host.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def in_guest(host, leader: int, cmd: str, check=True):
    return host.run(["nsenter", "-t", str(leader), "-a", "/bin/sh", "-c", cmd], check=check)


def test_the_host_is_pure_cgroup_v2_and_nspawnpy_sees_it_so(host):
    assert host.run("stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    assert host.run("findmnt -rno TARGET -R /sys/fs/cgroup").stdout.split() == ["/sys/fs/cgroup"]
    # The kernel lists this machine's v1 hierarchies in every /proc/PID/cgroup (they are
    # mounted outside), but the test host's systemd uses only the 0:: one.
    own = host.run("cat /proc/1/cgroup").stdout.splitlines()
    assert "0::/init.scope" in own
    assert not any(line.split(":")[1] == "name=systemd" and line.split(":")[2] != "/"
                   for line in own)
    out = host.run("PYTHONPATH=/opt/nspawnpy python3 -c 'from nspawnpy.supervisor import cgroup; "
                   "print(cgroup.layout(), cgroup.container_mounts(\"/\"))'").stdout
    assert out.split() == ["unified", "unified"]


def test_booted_guest_gets_its_own_cgroup2_tree_and_it_goes_away(host):
    debian_guest(host, "v2a")
    unit = "v2boot.service"
    payload = f"/sys/fs/cgroup/system.slice/{unit}/nspawnpy-v2a"
    try:
        host.run(["systemd-run", "-q", f"--unit={unit}", "-p", "Delegate=yes",
                  "-p", "RemainAfterExit=yes", "/usr/local/bin/nspawnpy", "--register=no", "-q",
                  "-b", "-D", f"{MACHINES}/v2a"])
        leader = int(host.wait_until(f"grep . {payload}/init.scope/cgroup.procs").split()[0])
        assert host.run(["cat", f"/proc/{leader}/comm"]).stdout.strip() == "systemd"
        host.wait_until(f"nsenter -t {leader} -a systemctl is-system-running "
                        "| grep -Eqx 'running|degraded'")
        assert "0::/init.scope" in in_guest(host, leader, "cat /proc/1/cgroup").stdout.splitlines()
        fs, opts = in_guest(host, leader, "findmnt -no FSTYPE,OPTIONS /sys/fs/cgroup").stdout.split()
        assert fs == "cgroup2" and opts.split(",")[0] == "rw"
        assert in_guest(host, leader, "stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
        in_guest(host, leader, "test -d /sys/fs/cgroup/system.slice/systemd-journald.service")
        # What the guest manages lives below the payload cgroup nspawnpy made on the host.
        host.run(f"test -d {payload}/system.slice/systemd-journald.service")
        procs = host.run(f"cat {payload}/system.slice/systemd-journald.service/cgroup.procs")
        assert procs.stdout.split()

        in_guest(host, leader, "systemctl poweroff")
        host.wait_until(f"systemctl show -P SubState {unit} | grep -qx exited", timeout=20)
        assert show(host, unit, "Result", "ExecMainStatus") == {"Result": "success",
                                                                "ExecMainStatus": "0"}
        host.run(f"! test -e {payload}")
    finally:
        host.stop_unit(unit)


def test_unit_boots_and_powers_off_in_v2(host):
    debian_guest(host, "v2u")
    unit = "nspawnpy@v2u.service"
    cg = f"/sys/fs/cgroup/machine.slice/{unit}"
    try:
        host.run(["systemctl", "start", unit], timeout=60)
        assert show(host, unit, "ActiveState")["ActiveState"] == "active"
        listed = host.run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout.split()
        assert listed[:3] == ["v2u", "container", "nspawnpy"]
        host.wait_until("systemctl -M v2u is-system-running --wait | grep -Eqx 'running|degraded'")
        assert sorted(host.run(f"cd {cg} && ls -d */").stdout.split()) == ["payload/",
                                                                          "supervisor/"]
        host.run(f"test -d {cg}/payload/init.scope && test -d {cg}/payload/system.slice")
        assert host.run(f"cat {cg}/cgroup.procs").stdout == ""
        main = show(host, unit, "MainPID")["MainPID"]
        assert main in host.run(f"cat {cg}/supervisor/cgroup.procs").stdout.split()
        own = host.run(["systemd-run", "-M", "v2u", "--wait", "--pipe", "-q", "--unit=probe",
                        "/bin/cat", "/proc/self/cgroup"]).stdout
        assert "0::/system.slice/probe.service\n" in own and "payload" not in own

        host.run(["machinectl", "poweroff", "v2u"])
        host.wait_until(f"systemctl show -P ActiveState {unit} | grep -qx inactive", timeout=20)
        assert show(host, unit, "Result", "ExecMainStatus") == {"Result": "success",
                                                                "ExecMainStatus": "0"}
        assert host.run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout.strip() == ""
        host.run(f"! test -e {cg}")
    finally:
        host.stop_unit(unit)


def test_plain_command_sees_cgroup2(host):
    debian_guest(host, "v2p")
    r = host.run(["nspawnpy", "--register=no", "-q", "--console=pipe", "-D", f"{MACHINES}/v2p",
                  "/bin/cat", "/proc/self/cgroup", "/proc/self/mountinfo"])
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert "0::/" in lines
    mounts = [line.split(" - ") for line in lines if " - " in line]
    cg = [right.split()[0] for left, right in mounts if left.split()[4].startswith("/sys/fs/cgroup")]
    assert cg == ["cgroup2"]


def test_nspawnpyctl_reads_a_unit_guests_cgroup2_and_attaches_into_it(host):
    import json
    debian_guest(host, "v2ctl")
    unit = "nspawnpy@v2ctl.service"
    ctl = ["env", "PYTHONPATH=/opt/nspawnpy", "/usr/bin/python3", "-m", "nspawnpy.ctl"]
    try:
        host.run(["systemctl", "start", unit], timeout=60)
        host.wait_until(f"{' '.join(ctl)} attach v2ctl -- systemctl is-system-running "
                        "| grep -Eq 'running|degraded'", timeout=60)
        info = json.loads(host.run([*ctl, "info", "v2ctl", "--json=short"]).stdout)
        assert info["usage"]["source"].startswith("cgroup") and info["usage"]["cpu_usec"] > 0
        assert info["usage"]["tasks"] > 3 and info["unit"] == unit
        # (only the 0:: line: this machine's own v1 hierarchies show in every /proc/PID/cgroup,
        # unmounted in the test host, so nothing can join them there)
        script = "grep ^0:: /proc/{0}/cgroup; readlink /proc/{0}/ns/cgroup /proc/{0}/ns/user"
        own = host.run([*ctl, "attach", "v2ctl", "--", "/bin/sh", "-c", script.format("self")])
        first = host.run([*ctl, "attach", "v2ctl", "--", "/bin/sh", "-c", script.format(1)])
        assert own.stdout == first.stdout and "0::/init.scope" in own.stdout
        host.run([*ctl, "stop", "v2ctl"])
        assert show(host, unit, "ActiveState", "Result") == {"ActiveState": "inactive",
                                                              "Result": "success"}
    finally:
        host.run(["systemctl", "stop", unit], check=False)
        host.run(["systemctl", "reset-failed", unit], check=False)
