"""The fixtures themselves: trees that really boot, a test host that really answers."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import rootfs
from conftest import leftovers, skip_unless, stop
from testhost import ScratchCgroup, clean_nspawn_runtime, run_systemd_nspawn, systemd_nspawn

needs_nspawn = pytest.mark.skipif(systemd_nspawn() is None,
                                  reason="systemd-nspawn is not installed (systemd-container)")


def test_busybox_tree_has_users_groups_and_applets(busybox_root):
    bb = busybox_root
    assert (bb / "bin/busybox").is_file() and not (bb / "bin/busybox").is_symlink()
    assert os.readlink(bb / "bin/sh") == "busybox"
    assert os.readlink(bb / "sbin/init") == "../bin/busybox"
    assert (bb / "sbin/init").resolve() == (bb / "bin/busybox")
    for d in ("proc", "sys", "dev", "tmp", "run", "etc", "root", "var/tmp", "usr/bin", "usr/sbin"):
        assert (bb / d).is_dir(), d
    assert "root:x:0:0:root:/root:/bin/sh" in (bb / "etc/passwd").read_text()
    assert "alice:x:1000:1000:Alice:/home/alice:/bin/sh" in (bb / "etc/passwd").read_text()
    assert (bb / "home/alice").stat().st_uid == 1000
    assert "wheel:x:10:alice" in (bb / "etc/group").read_text()
    assert "ID=busybox" in (bb / "etc/os-release").read_text()
    assert (bb / "etc/machine-id").read_text() == ""


def test_busybox_tree_builds_in_well_under_a_second(tmp_path):
    t0 = time.monotonic()
    rootfs.busybox_tree(tmp_path / "bb")
    assert time.monotonic() - t0 < 0.5


@needs_nspawn
def test_busybox_tree_runs_under_systemd_nspawn(busybox_root):
    r = run_systemd_nspawn(["--register=no", "--keep-unit", "-q", "-D", str(busybox_root),
                            "/bin/sh", "-c", "echo ok; id -u alice; id -Gn alice"], check=True)
    assert r.stdout.split("\n")[:3] == ["ok", "1000", "alice wheel"]
    assert not Path("/run/systemd/nspawn/propagate", busybox_root.name).exists()
    assert leftovers() == []


@needs_nspawn
def test_busybox_init_powers_off_cleanly_on_sigint(busybox_root):
    """busybox init's ctrlaltdel path ends in reboot(POWER_OFF): nspawn exits 0."""
    with ScratchCgroup("bbinit") as cg:
        p = subprocess.Popen([systemd_nspawn(), "--register=no", "--keep-unit", "-q", "-b",
                              "-D", str(busybox_root)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=cg.enter)
        try:
            kids = []
            for _ in range(200):
                kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
                if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "init":
                    break
                time.sleep(0.02)
            assert kids, "no container init"
            time.sleep(0.3)  # let init install its signal handlers
            os.kill(int(kids[0]), signal.SIGINT)
            out, _ = p.communicate(timeout=30)
        finally:
            stop(p)
            clean_nspawn_runtime(busybox_root.name)
    assert p.returncode == 0, out
    assert "Requesting system poweroff" in out


def test_debian_root_has_systemd(debian_root):
    assert (debian_root / "usr/lib/systemd/systemd").is_file()
    assert not (debian_root / "etc/hostname").exists()
    assert (debian_root / "etc/machine-id").read_text().strip() in ("", "uninitialized")
    assert "bookworm" in (debian_root / "etc/os-release").read_text()


def test_mirror_comes_from_apt_sources():
    assert rootfs.mirror().startswith(("http://", "https://", "file:"))


def test_testhost_boots_and_systemd_answers(testhost):
    r = testhost.run(["systemctl", "is-system-running"], check=False)
    assert r.stdout.strip() in ("running", "degraded"), r
    assert testhost.run("hostname").stdout.strip() == testhost.machine
    assert testhost.leader > 1 and testhost.root.is_dir()


def test_testhost_machinectl_list_works(testhost):
    r = testhost.run(["machinectl", "list", "--no-legend"])
    assert r.returncode == 0


def test_testhost_sees_checkout_read_only_and_wrapper(testhost, repo):
    r = testhost.run("test -f /opt/nspawnpy/nspawnpy/__init__.py && "
                     "! touch /opt/nspawnpy/x 2>/dev/null && echo ro")
    assert r.stdout.strip() == "ro"
    r = testhost.run(["cat", "/usr/local/bin/nspawnpy"])
    assert "PYTHONPATH=/opt/nspawnpy" in r.stdout
    r = testhost.run(["python3", "-c", "import dbus_next, pystemd, pyroute2; print('ok')"])
    assert r.stdout.strip() == "ok"


def test_testhost_install_units_reloads(testhost):
    installed = testhost.install_units()
    for name in installed:
        kind = "network" if name.endswith((".network", ".netdev", ".link")) else "system"
        assert (testhost.root / "etc/systemd" / kind / name).exists()


def test_testhost_run_reports_failures(testhost):
    with pytest.raises(subprocess.CalledProcessError):
        testhost.run("exit 3")
    assert testhost.run("exit 3", check=3).returncode == 3


def test_run_nspawnpy_uses_the_checkout(run_nspawnpy, nspawnpy_env, repo):
    r = subprocess.run(["/usr/bin/python3", "-c", "import nspawnpy; print(nspawnpy.__file__)"],
                       env=nspawnpy_env, capture_output=True, text=True, check=True, cwd="/")
    assert r.stdout.strip() == str(repo / "nspawnpy/__init__.py")
    skip_unless((repo / "nspawnpy/__main__.py").exists(), "nspawnpy/__main__.py not written yet")
    r = run_nspawnpy("--help")
    assert "No module named" not in r.stderr, r.stderr


def test_leftovers_reports_stray_mounts(tmp_path):
    d = Path("/var/tmp") / f"nspawnpy-leftover-probe-{os.getpid()}"
    d.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "probe", str(d)], check=True)
        try:
            assert any(str(d) in x for x in leftovers())
        finally:
            subprocess.run(["umount", str(d)], check=True)
        assert not any(str(d) in x for x in leftovers())
    finally:
        d.rmdir()
