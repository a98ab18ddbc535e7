"""systemd integration, checked inside the test host with the real tools: nspawnpy@.service
under systemctl, registration as machinectl/busctl see it, scopes and their properties,
sd_notify and the errors when machined cannot be used."""

from __future__ import annotations

import re

import pytest

import rootfs

MACHINES = "/var/lib/machines"


@pytest.fixture(scope="module")
def host(testhost):
    testhost.install_units()
    return testhost




def show(host, unit: str, *props: str) -> dict:
    out = host.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def machines(host) -> list[list[str]]:
    out = host.run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def journal(host, unit: str) -> str:
    return host.run(["journalctl", "-u", unit, "--no-pager", "-o", "cat"], check=False).stdout


def debian_guest(host, name: str):
    rootfs.debian_tree(host.root / MACHINES.lstrip("/") / name)


def busybox_guest(host, name: str):
    rootfs.busybox_tree(host.root / MACHINES.lstrip("/") / name)


def test_unit_boots_registers_reboots_and_powers_off(host):
    debian_guest(host, "web1")
    unit = "nspawnpy@web1.service"
    try:
        host.run(["systemctl", "start", unit], timeout=60)
        assert show(host, unit, "ActiveState")["ActiveState"] == "active"
        assert ["web1", "container", "nspawnpy"] == machines(host)[0][:3]

        status = host.run(["machinectl", "status", "web1", "--no-pager"]).stdout
        leader = show(host, unit, "MainPID")  # the supervisor; the leader is its child
        assert f"Unit: {unit}" in status
        assert f"Root: {MACHINES}/web1" in status
        assert "Service: nspawnpy; class container" in status
        assert "Leader:" in status and "(systemd)" in status
        assert "Iface: ve-web1" in status
        assert leader["MainPID"] != "0"
        # The guest's own systemd is reachable through machined's container bus.
        host.wait_until("systemctl -M web1 is-system-running --wait | grep -Eq 'running|degraded'")
        out = host.run(["systemd-run", "-M", "web1", "--wait", "--pipe", "-q",
                        "/bin/cat", "/proc/sys/kernel/hostname", "/proc/1/comm"]).stdout
        assert out.split() == ["web1", "systemd"]
        # -U: the guest runs in a 64K range of its own and owns its payload cgroup.
        inside, base, size = host.run(["systemd-run", "-M", "web1", "--wait", "--pipe", "-q",
                                       "/bin/cat", "/proc/self/uid_map"]).stdout.split()
        assert (inside, size) == ("0", "65536") and int(base) >= 0x80000
        payload = f"machine.slice/{unit}/payload"
        owner = host.run(f"stat -c %u /sys/fs/cgroup/systemd/{payload} 2>/dev/null || "
                         f"stat -c %u /sys/fs/cgroup/{payload}").stdout.strip()
        assert owner == base
        # The unit is split into supervisor/ and payload/, and the guest's systemd manages
        # the delegated subtree below payload/ (which it sees as its root).
        tree = host.run(["systemd-cgls", "--no-pager", "-u", unit]).stdout
        assert "├─payload" in tree and "└─supervisor" in tree
        own = host.run(["systemd-run", "-M", "web1", "--wait", "--pipe", "-q", "--unit=probe",
                        "/bin/cat", "/proc/self/cgroup"]).stdout
        assert ":/system.slice/probe.service\n" in own and "payload" not in own

        host.run(["machinectl", "reboot", "web1"])
        host.wait_until(f"test $(systemctl show -P NRestarts {unit}) = 1")
        host.wait_until("machinectl show web1 -p State --value | grep -qx running")
        assert show(host, unit, "ActiveState")["ActiveState"] == "active"

        host.run(["machinectl", "poweroff", "web1"])
        host.wait_until(f"systemctl show -P ActiveState {unit} | grep -qx inactive")
        props = show(host, unit, "Result", "ExecMainStatus")
        assert props == {"Result": "success", "ExecMainStatus": "0"}
        assert machines(host) == []
    finally:
        host.stop_unit(unit)


def test_a_settled_unit_runs_the_slim_supervisor_and_stops_cleanly(host):
    """nspawnpy@.service (registered, Type=notify, watchdog): a second after the go-ahead the
    unit's main process is the slim supervisor (same PID, no ctypes mapped), still
    registered, and systemctl stop ends it as before."""
    debian_guest(host, "slim1")
    unit = "nspawnpy@slim1.service"
    try:
        host.run(["systemctl", "start", unit], timeout=60)
        pid = show(host, unit, "MainPID")["MainPID"]
        started_as = host.run(f"cat /proc/{pid}/comm; tr '\\0' ' ' </proc/{pid}/cmdline").stdout
        host.wait_until("systemctl -M slim1 is-system-running --wait | grep -Eq 'running|degraded'")
        # no ctypes mapped, and SIGTERM caught again (an image mid-exec has no handlers)
        host.wait_until(f"! grep -q _ctypes /proc/{pid}/maps && test $(( 0x$(awk "
                        f"'/^SigCgt/{{print $2}}' /proc/{pid}/status) & 16384 )) -ne 0",
                        timeout=15)
        assert show(host, unit, "MainPID")["MainPID"] == pid
        assert host.run(f"cat /proc/{pid}/comm; tr '\\0' ' ' </proc/{pid}/cmdline").stdout \
            == started_as
        assert ["slim1", "container", "nspawnpy"] == machines(host)[0][:3]
        host.run(["systemctl", "stop", unit], timeout=60)
        assert show(host, unit, "Result")["Result"] == "success"
        assert "Halting system" in journal(host, unit) or "System Halt" in journal(host, unit)
        assert machines(host) == []
    finally:
        host.stop_unit(unit)


def test_terminate_stops_the_unit_with_a_clean_shutdown(host):
    debian_guest(host, "web2")
    unit = "nspawnpy@web2.service"
    try:
        host.run(["systemctl", "start", unit], timeout=60)
        host.wait_until("systemctl -M web2 is-system-running --wait | grep -Eq 'running|degraded'")
        host.run(["machinectl", "terminate", "web2"])
        host.wait_until(f"systemctl show -P ActiveState {unit} | grep -qx inactive", timeout=20)
        assert show(host, unit, "Result")["Result"] == "success"
        assert "System Halt" in journal(host, unit) or "Halting system" in journal(host, unit)
        assert machines(host) == []
    finally:
        host.stop_unit(unit)


def test_plain_run_gets_a_machine_scope_with_properties_and_sigkill_unregisters(host):
    busybox_guest(host, "bbs")
    host.run(f"nspawnpy -q -D {MACHINES}/bbs -M bbs --property=MemoryMax=64M "
             "--property=CPUQuota=20% --property=TasksMax=77 /bin/sleep 100 "
             ">/tmp/bbs.log 2>&1 </dev/null &")
    try:
        host.wait_until("machinectl show bbs -p State --value | grep -qx running", timeout=20)
        status = host.run(["machinectl", "status", "bbs", "--no-pager"]).stdout
        assert "Unit: machine-bbs.scope" in status and "(sleep)" in status
        props = show(host, "machine-bbs.scope", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax",
                     "Slice", "DevicePolicy", "Delegate", "ActiveState")
        assert props == {"MemoryMax": str(64 << 20), "CPUQuotaPerSecUSec": "200ms",
                         "TasksMax": "77", "Slice": "machine.slice", "DevicePolicy": "closed",
                         "Delegate": "yes", "ActiveState": "active"}
        leader = host.run(["machinectl", "show", "bbs", "-p", "Leader", "--value"]).stdout.strip()
        supervisor = host.run(["ps", "-o", "ppid=", "-p", leader]).stdout.strip()
        host.run(["kill", "-KILL", supervisor])
        host.wait_until("! machinectl show bbs >/dev/null 2>&1", timeout=15)
        host.wait_until("! systemctl is-active -q machine-bbs.scope", timeout=15)
    finally:
        host.run(["machinectl", "kill", "bbs", "-s", "KILL"], check=False)


def test_U_works_where_the_root_mount_is_shared_and_outside_our_cgroup_namespace(host):
    """The test host's / is shared, and nsenter leaves us above its cgroup namespace root
    (/proc/self/cgroup says /../..): the ID-mapped root must not stay a peer of the host's
    (pivot_root refuses that), and no cgroup outside our view is chowned."""
    busybox_guest(host, "bbu")
    assert host.run("findmnt -no PROPAGATION /").stdout.strip() == "shared"
    show_ = "id -u; cat /proc/self/uid_map; grep -E '^[0-9]+ [0-9]+ [0-9:]+ [^ ]+ / ' " \
        "/proc/self/mountinfo"
    host_groups = set(re.findall(r"shared:(\d+)", host.run("cat /proc/self/mountinfo").stdout))
    for options in ("-U", "-U --keep-unit", "-U -n"):
        r = host.run(["nspawnpy", "--register=no", "-q", "--console=pipe", *options.split(),
                      "-D", f"{MACHINES}/bbu", "/bin/sh", "-c", show_], check=False)
        assert (r.returncode, r.stderr) == (0, ""), options
        uid, uid_map, root = r.stdout.splitlines()
        assert uid == "0" and uid_map.split()[0::2] == ["0", "65536"], options
        # Shared as in nspawn, but in a peer group of its own, never one of the host's.
        assert "idmapped" in root, options
        assert not set(re.findall(r"shared:(\d+)", root)) & host_groups, options


def test_register_fails_in_one_line_without_machined(host):
    busybox_guest(host, "bbn")
    cmd = f"nspawnpy -q -D {MACHINES}/bbn /bin/true"
    r = host.run(cmd, check=1, env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/nonexistent"})
    assert r.stderr.startswith("Failed to register machine: ")
    assert "--register=no" in r.stderr and r.stderr.count("\n") == 1
    host.run("systemctl mask --runtime -q systemd-machined && systemctl stop systemd-machined")
    try:
        r = host.run(cmd, check=1)
        assert r.stderr.startswith("Failed to register machine: ") and "masked" in r.stderr
    finally:
        host.run("systemctl unmask --runtime -q systemd-machined")
    host.run(f"nspawnpy -q --register=no -D {MACHINES}/bbn /bin/true",
             env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/nonexistent"})
    assert all(m[0] != "bbn" for m in machines(host))


def test_stale_registration_is_replaced_but_a_live_one_is_refused(host):
    busybox_guest(host, "bbx")
    busybox_guest(host, "bby")
    # A machine whose leader died while its unit lives on (what a crash can leave behind).
    host.run("systemd-run -q --unit=stale-holder /bin/sh -c '/bin/sleep 1000 & exec /bin/sleep 999'")
    try:
        main = show(host, "stale-holder.service", "MainPID")["MainPID"]
        procs = host.run("cat /sys/fs/cgroup/systemd/system.slice/stale-holder.service/cgroup.procs"
                         " 2>/dev/null || cat /sys/fs/cgroup/system.slice/stale-holder.service/"
                         "cgroup.procs").stdout.split()
        leader = next(p for p in procs if p != main)
        host.run(["busctl", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
                  "org.freedesktop.machine1.Manager", "RegisterMachine", "sayssus",
                  "stale", "0", "", "container", leader, "/"])
        host.run(["kill", "-KILL", leader])
        assert ["stale", "container"] == [m[:2] for m in machines(host) if m[0] == "stale"][0]
        r = host.run(f"nspawnpy -q -D {MACHINES}/bbx -M stale /bin/echo registered", check=0)
        assert r.stdout == "registered\n"
    finally:
        host.stop_unit("stale-holder.service")

    host.run(f"nspawnpy -q -D {MACHINES}/bbx -M taken /bin/sleep 30 >/dev/null 2>&1 &")
    try:
        host.wait_until("machinectl show taken -p State --value | grep -qx running", timeout=20)
        r = host.run(f"nspawnpy -q -D {MACHINES}/bby -M taken /bin/true", check=1)
        assert r.stderr == ("Failed to register machine: machine 'taken' already exists and is "
                            "running; pick another name with --machine=.\n")
    finally:
        host.run(["machinectl", "kill", "taken", "-s", "KILL"], check=False)


def test_unit_with_bad_instance_fails_with_a_clear_line(host):
    for instance, message in (("a..b", "Invalid value for --machine=: 'a..b'"),
                              ("missing", "No image for machine 'missing'.")):
        unit = f"nspawnpy@{instance}.service"
        try:
            host.run(["systemctl", "start", unit], check=False)
            host.wait_until(f"systemctl is-failed -q {unit}", timeout=15)
            assert show(host, unit, "ExecMainStatus")["ExecMainStatus"] == "1"
            assert message in journal(host, unit)
        finally:
            host.stop_unit(unit)
    assert machines(host) == []


def test_notify_unit_gets_ready_status_and_watchdog_pings(host):
    busybox_guest(host, "bbw")
    r = host.run("systemd-run -q --wait --collect -p Type=notify -p WatchdogSec=1s "
                 "-p Delegate=yes --unit=wd-test "
                 f"/usr/local/bin/nspawnpy -q --keep-unit -D {MACHINES}/bbw /bin/sleep 2.5",
                 check=False, timeout=30)
    assert r.returncode == 0, r.stderr + journal(host, "wd-test.service")


def test_terminating_a_scope_machine_halts_its_guest_through_the_supervisor(host):
    debian_guest(host, "scb")
    host.run(f"nspawnpy -q -b -D {MACHINES}/scb >/tmp/scb.log 2>&1 </dev/null &")
    try:
        host.wait_until("systemctl -M scb is-system-running --wait | grep -Eq 'running|degraded'")
        controller = show(host, "machine-scb.scope", "Controller")["Controller"]
        assert controller.startswith(":")  # our bus connection gets RequestStop
        tree = host.run(["systemd-cgls", "--no-pager", "-u", "machine-scb.scope"]).stdout
        assert "init.scope" in tree or "(systemd)" in tree or "/systemd" in tree
        host.run(["machinectl", "terminate", "scb"])
        host.wait_until("! machinectl show scb >/dev/null 2>&1", timeout=15)
        host.wait_until("grep -q 'Halting system' /tmp/scb.log", timeout=15)
    finally:
        host.run(["machinectl", "kill", "scb", "-s", "KILL"], check=False)


def test_a_reboot_in_place_of_a_scope_machine_clones_its_next_pid_1_with_one_thread(host):
    """machined's Controller connection runs in a thread; PID 1 comes from a raw clone(),
    which must find no other thread (glibc's copy of one can hang the child): the first
    run's Controller is gone before the second run's clone, which then starts its own."""
    busybox_guest(host, "bbr")
    root = host.root / MACHINES.lstrip("/") / "bbr"
    (root / "etc/inittab").write_text(
        "::sysinit:/bin/sh -c '[ -e /booted ] || { touch /booted; reboot -f; }'\n"
        "::once:/bin/sleep 100\n")
    host.run(f"nspawnpy -q -U -b -D {MACHINES}/bbr >/tmp/bbr.log 2>&1 </dev/null &")
    try:
        host.wait_until("L=$(machinectl show bbr -p Leader --value) && pgrep -P $L -x sleep",
                        timeout=30)  # the second boot's
        assert (root / "booted").exists()
        leader = host.run(["machinectl", "show", "bbr", "-p", "Leader", "--value"]).stdout.strip()
        supervisor = host.run(["ps", "-o", "ppid=", "-p", leader]).stdout.strip()
        threads = host.run(f"ls /proc/{supervisor}/task | wc -l").stdout.strip()
        assert threads == "2", threads  # ourselves and this run's Controller
    finally:
        host.run(["machinectl", "kill", "bbr", "-s", "KILL"], check=False)
