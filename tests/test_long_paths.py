"""A tree deep below the host's root (a path of ~200 characters, longer than an AF_UNIX
socket's 108-byte sun_path) runs as under systemd-nspawn 252, which runs it."""

import pytest

import rootfs
import testhost
from conftest import skip_unless

SHOW_SOCKETS = "ls -l /run/host/notify /run/host/inaccessible/sock | cut -c1-10; echo ok"


@pytest.fixture
def deep_tree(busybox_root):
    """A busybox tree at a path of about 200 characters (removed with busybox_root's dir)."""
    deep = busybox_root.parent / ("d" * 80) / ("e" * 80) / "bb-deep"
    rootfs.busybox_tree(deep)
    assert len(str(deep)) > 190
    return deep


@pytest.mark.parametrize("extra", [[], ["-U"], ["-a"], ["--ephemeral"], ["-n"], ["-b"],
                                   ["--volatile=overlay"], ["--link-journal=try-guest"],
                                   ["--private-users=pick", "--private-users-ownership=map"]],
                         ids=["plain", "userns", "as-pid2", "ephemeral", "veth", "boot",
                              "volatile-overlay", "link-journal", "userns-map"])
def test_a_tree_at_a_long_path_runs(run_nspawnpy, deep_tree, extra):
    command = ["/bin/sh", "-c", SHOW_SOCKETS]
    if extra == ["-b"]:
        (deep_tree / "etc/inittab").write_text(f"::sysinit:/bin/sh -c '{SHOW_SOCKETS}'\n"
                                               "::sysinit:/sbin/poweroff -f\n")
        command = []
    (deep_tree / "var/log/journal").mkdir(parents=True, exist_ok=True)
    r = run_nspawnpy("--register=no", "-q", "--console=pipe", *extra, "-D", deep_tree, *command)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["s---------", "srwxr-xr-x", "ok"]


def test_a_tree_at_a_long_path_runs_as_under_systemd_nspawn(run_nspawnpy, deep_tree):
    skip_unless(testhost.systemd_nspawn(), "systemd-nspawn is not installed")
    args = ["--register=no", "-q", "--console=pipe", "-D", str(deep_tree), "/bin/sh", "-c",
            SHOW_SOCKETS]
    theirs = testhost.run_systemd_nspawn(["--keep-unit", *args])
    ours = run_nspawnpy(*args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (
        0, "s---------\nsrwxr-xr-x\nok\n")


def test_a_template_copied_to_a_long_path_runs(run_nspawnpy, deep_tree):
    target = deep_tree.parent / ("f" * 60) / "copy"
    r = run_nspawnpy("--register=no", "-q", "--console=pipe", f"--template={deep_tree}", "-D",
                     target, "/bin/sh", "-c", SHOW_SOCKETS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["s---------", "srwxr-xr-x", "ok"]
