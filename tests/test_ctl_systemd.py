"""nspawnpyctl where systemd and machined run (inside the test host): a guest of
`systemctl start nspawnpy@NAME` and one of `systemd-nspawn` both show in `list`; info, attach
and stop work on them; enable/disable go through systemctl."""

from __future__ import annotations

import json

import pytest

import rootfs

MACHINES = "/var/lib/machines"
CTL = ["env", "PYTHONPATH=/opt/nspawnpy", "/usr/bin/python3", "-m", "nspawnpy.ctl"]


@pytest.fixture(scope="module")
def host(testhost):
    testhost.install_units()
    return testhost


def ctl(host, *args, check=True, timeout=60):
    return host.run([*CTL, *args], check=check, timeout=timeout)


def listed(host) -> dict:
    return {m["name"]: m for m in json.loads(ctl(host, "list", "--json=short").stdout)}


def test_unit_and_systemd_nspawn_machines_are_listed_inspected_attached_and_stopped(host):
    rootfs.debian_tree(host.root / MACHINES.lstrip("/") / "ctlweb")
    rootfs.busybox_tree(host.root / MACHINES.lstrip("/") / "ctlnsp")
    unit, nspawn_unit = "nspawnpy@ctlweb.service", "ctlnsp-run.service"
    try:
        host.run(["systemctl", "start", unit], timeout=60)
        host.run(["systemd-run", f"--unit={nspawn_unit}", "-p", "Delegate=yes", "--",
                  "systemd-nspawn", "-q", "-D", f"{MACHINES}/ctlnsp", "-M", "ctlnsp",
                  "/bin/sleep", "300"])
        host.wait_until("machinectl show ctlnsp -p State --value | grep -qx running", timeout=20)
        host.wait_until(f"{' '.join(CTL)} list | grep -q ctlweb", timeout=30)
        machines = listed(host)
        web, nsp = machines["ctlweb"], machines["ctlnsp"]
        assert (web["state"], web["machined"], web["unit"], web["source"]) == \
            ("running", True, unit, "nspawnpy")
        assert (nsp["state"], nsp["machined"], nsp["source"]) == ("running", True, "machined")
        assert nsp["unit"] == "machine-ctlnsp.scope" and nsp["leader"] > 1

        host.wait_until(f"{' '.join(CTL)} attach ctlweb -- systemctl is-system-running "
                        "| grep -Eq 'running|degraded'", timeout=60)
        own = ctl(host, "attach", "ctlweb", "--", "/bin/sh", "-c",
                  "readlink /proc/self/ns/pid /proc/self/ns/user; id -u; cat /proc/self/cgroup")
        first = ctl(host, "attach", "ctlweb", "--", "/bin/sh", "-c",
                    "readlink /proc/1/ns/pid /proc/1/ns/user; id -u; cat /proc/1/cgroup")
        assert own.stdout == first.stdout and own.stdout.split()[2] == "0"
        info = json.loads(ctl(host, "info", "ctlweb", "--json=short").stdout)
        assert info["usage"]["tasks"] > 3 and info["usage"]["cpu_usec"] > 0
        assert any(link.startswith("ve-") for link in info["host_links"])
        info = json.loads(ctl(host, "info", "ctlnsp", "--json=short").stdout)
        assert info["state"] == "running" and info["usage"]["tasks"] >= 1

        ctl(host, "stop", "ctlweb", "--timeout=30")
        assert host.run(["systemctl", "show", "-P", "ActiveState", unit]).stdout.strip() == \
            "inactive"
        assert host.run(["systemctl", "show", "-P", "Result", unit]).stdout.strip() == "success"
        ctl(host, "stop", "ctlnsp", "--timeout=5")
        host.wait_until("! machinectl show ctlnsp >/dev/null 2>&1", timeout=15)
        machines = listed(host)
        assert "ctlweb" not in machines and "ctlnsp" not in machines
    finally:
        host.stop_unit(unit)
        host.stop_unit(nspawn_unit)


def test_enable_and_disable_go_through_systemctl(host):
    rootfs.debian_tree(host.root / MACHINES.lstrip("/") / "ctlen")
    unit = "nspawnpy@ctlen.service"
    try:
        ctl(host, "enable", "ctlen")
        assert host.run(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled"
        assert host.run(["systemctl", "is-enabled", "machines.target"]).stdout.strip() == "enabled"
        ctl(host, "disable", "ctlen")
        assert host.run(["systemctl", "is-enabled", unit], check=False).stdout.strip() == "disabled"
        assert host.run(["systemctl", "is-active", unit], check=False).stdout.strip() != "active"
        r = ctl(host, "enable", "ctl-no-such", check=False)
        assert r.returncode == 1 and "ctl-no-such" in r.stderr
    finally:
        host.stop_unit(unit)
        host.run(["systemctl", "disable", unit], check=False)


def test_enable_says_clearly_when_systemd_is_not_the_init_system(repo):
    import os
    import subprocess
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here")
    r = subprocess.run(["/usr/bin/python3", "-m", "nspawnpy.ctl", "enable", "web"], cwd=repo,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert r.returncode == 1 and "systemd is not the init system" in r.stderr
    assert "nspawnpy -b -M web" in r.stderr
