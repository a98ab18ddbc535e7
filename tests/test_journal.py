"""--link-journal=: each mode's effect on the host's /var/log/journal and inside the container
(busybox trees on this machine), the refusals, and a Debian guest's journal read on the test
host through the link.

As nspawn does, the guest-mode symlink /var/log/journal/ID stays on the host after the machine
stops (so `journalctl -m` still finds that journal); the tests remove it themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import leftovers, skip_unless

BASE = ("--register=no", "-q")
JOURNAL = Path("/var/log/journal")
SHOW = "ls -d /var/log/journal/*/ 2>/dev/null; grep ' /var/log/journal' /proc/self/mountinfo; true"


def host_machine_id() -> str:
    return Path("/etc/machine-id").read_text().strip()


@pytest.fixture
def jid():
    """A fresh machine ID; whatever ended up at /var/log/journal/ID is removed afterwards."""
    skip_unless(JOURNAL.is_dir(), "the host has no /var/log/journal")
    skip_unless(len(Path("/etc/machine-id").read_text().strip()) == 32, "the host has no machine ID")
    mid = uuid.uuid4().hex
    yield mid
    p = JOURNAL / mid
    assert not any(str(p) in m for m in leftovers()), f"{p} is still mounted"
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


@pytest.fixture
def run(run_nspawnpy, busybox_root, jid):
    """run(*options, check=0, script=SHOW) -> CompletedProcess of a container with machine ID jid."""

    def go(*options, check=0, script=SHOW, uuid_=None):
        return run_nspawnpy(*BASE, "-D", busybox_root, f"--uuid={uuid_ or jid}", *options,
                            "/bin/sh", "-c", script, check=check)

    return go


def journal_mounts(out: str) -> list[str]:
    return [line.split()[4] for line in out.splitlines() if " - " in line]


def test_guest_mode_symlinks_the_hosts_journal_dir_into_the_tree(run, busybox_root, jid):
    out = run("--link-journal=guest").stdout
    p = JOURNAL / jid
    assert p.is_symlink() and os.readlink(p) == f"{busybox_root}/var/log/journal/{jid}"
    assert (busybox_root / f"var/log/journal/{jid}").is_dir()
    assert f"/var/log/journal/{jid}/" in out.split()
    assert journal_mounts(out) == []
    # A second start finds its own link and keeps it.
    run("-j")
    assert os.readlink(p) == f"{busybox_root}/var/log/journal/{jid}"


def test_host_mode_bind_mounts_the_hosts_journal_dir(run, busybox_root, jid):
    out = run("--link-journal=host").stdout
    assert (JOURNAL / jid).is_dir() and not (JOURNAL / jid).is_symlink()
    assert journal_mounts(out) == [f"/var/log/journal/{jid}"]
    assert (busybox_root / f"var/log/journal/{jid}").is_dir()
    out = run("--link-journal=host", script=f"echo hi >/var/log/journal/{jid}/probe").stdout
    assert (JOURNAL / jid / "probe").read_text() == "hi\n"
    assert not (busybox_root / f"var/log/journal/{jid}/probe").exists()
    assert leftovers(busybox_root) == []


def test_auto_links_nothing_when_the_host_has_nothing(run, busybox_root, jid):
    out = run().stdout  # auto is the default
    assert not os.path.lexists(JOURNAL / jid)
    assert journal_mounts(out) == []
    # like nspawn, the guest's /var/log/journal exists afterwards (its journal turns persistent)
    assert (busybox_root / "var/log/journal").is_dir()
    assert not (busybox_root / f"var/log/journal/{jid}").exists()


def test_auto_follows_what_the_host_has(run, busybox_root, jid):
    p = JOURNAL / jid
    p.mkdir()
    assert journal_mounts(run("--link-journal=auto").stdout) == [f"/var/log/journal/{jid}"]
    p.rmdir()
    p.symlink_to(f"{busybox_root}/var/log/journal/{jid}")
    out = run("--link-journal=auto").stdout
    assert journal_mounts(out) == [] and f"/var/log/journal/{jid}/" in out.split()
    # a link to somewhere else is stale: nspawn removes it and links nothing
    p.unlink()
    p.symlink_to("/nonexistent/journal")
    run("--link-journal=auto")
    assert not os.path.lexists(p)


def test_try_guest_on_a_read_only_image_without_var_log_skips(run, busybox_root, jid):
    assert not (busybox_root / "var/log").exists()
    run("--read-only", "--link-journal=try-guest")
    run("--read-only")
    assert not os.path.lexists(JOURNAL / jid)
    r = run("--read-only", "--link-journal=guest", check=1)
    assert r.stderr == "Failed to create /var/log: Read-only file system\n"
    assert not os.path.lexists(JOURNAL / jid)


def test_try_host_skips_when_the_hosts_dir_is_a_mount_point(nspawnpy_cmd, nspawnpy_env,
                                                              busybox_root, jid):
    skip_unless(shutil.which("unshare"), "unshare is not installed")
    p = JOURNAL / jid
    script = (f'mkdir {p} && mount -t tmpfs tmpfs {p} && "$@" --link-journal=try-host '
              f"/bin/sh -c {SHOW!r} && ! \"$@\" --link-journal=host /bin/true")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                        *nspawnpy_cmd, *BASE, "-D", busybox_root, f"--uuid={jid}"],
                       env=nspawnpy_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert journal_mounts(r.stdout) == []
    assert r.stderr == f"{p}: already a mount point, refusing to use for journal\n"


def test_equal_machine_ids_are_refused(run, jid):
    host = host_machine_id()
    r = run("--link-journal=guest", uuid_=host, check=1)
    assert r.stderr == f"Host and machine ids are equal ({host}): refusing to link journals\n"
    r = run("--link-journal=try-guest", uuid_=host)
    assert r.stderr == f"Host and machine ids are equal ({host}): refusing to link journals\n"
    assert journal_mounts(r.stdout) == []
    assert not os.path.islink(JOURNAL / host)


def test_machine_id_comes_from_the_trees_etc_machine_id(run_nspawnpy, busybox_root, jid):
    (busybox_root / "etc/machine-id").write_text(jid + "\n")
    run_nspawnpy(*BASE, "-D", busybox_root, "--link-journal=guest", "/bin/true", check=0)
    assert os.readlink(JOURNAL / jid) == f"{busybox_root}/var/log/journal/{jid}"


def test_guest_mode_refuses_what_it_cannot_replace(run, jid):
    p = JOURNAL / jid
    p.write_text("")
    r = run("--link-journal=try-guest", check=1)
    assert r.stderr == f"{p} already exists and is neither a symlink nor a directory\n"
    p.unlink()
    p.mkdir()
    (p / "system.journal").write_text("")
    r = run("--link-journal=guest", check=1)
    assert r.stderr == f"Failed to remove {p}: Directory not empty\n"
    assert (p / "system.journal").exists()
    (p / "system.journal").unlink()
    run("--link-journal=guest")  # an empty directory makes way for the link
    assert p.is_symlink()


def test_ephemeral_and_no_link_nothing(run, busybox_root, jid):
    run("--link-journal=no")
    assert not (busybox_root / "var/log").exists()
    run("-x", "--link-journal=try-guest")
    run("-x", "-j")
    assert not os.path.lexists(JOURNAL / jid)
    for mode in ("guest", "host"):
        r = run("-x", f"--link-journal={mode}", check=1)
        assert r.stderr == "--ephemeral and --link-journal={host,guest} may not be combined.\n"
    assert not os.path.lexists(JOURNAL / jid) and not (busybox_root / "var/log").exists()
    assert [p.name for p in busybox_root.parent.iterdir()] == [busybox_root.name]


# -- the test host: a Debian guest's journal read through the link --------------------------


@pytest.mark.parametrize("mode", ["guest", "host"])
def test_debian_guest_journal_is_readable_on_the_host_through_the_link(testhost, mode):
    import rootfs
    name, mid = f"jrn-{mode}", uuid.uuid4().hex
    tree = testhost.root / "var/lib/machines" / name
    rootfs.debian_tree(tree)
    (tree / "etc/machine-id").write_text(mid + "\n")
    (tree / "var/log/journal").mkdir(parents=True, exist_ok=True)
    testhost.run("mkdir -p /var/log/journal")
    link = f"/var/log/journal/{mid}"
    testhost.run(f"nspawnpy -q -D /var/lib/machines/{name} -M {name} --link-journal={mode} -b "
                 f">/tmp/{name}.log 2>&1 </dev/null &")
    try:
        deadline = time.monotonic() + 40
        while True:
            r = testhost.run(f"journalctl -D {link} -o cat --no-pager | "
                             "grep -q 'Startup finished'", check=False)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                log = testhost.run(f"cat /tmp/{name}.log; ls -la /var/log/journal", check=False)
                raise AssertionError(f"guest journal not readable via {link}\n{log.stdout}")
            time.sleep(0.3)
        if mode == "guest":
            assert testhost.run(["readlink", link]).stdout.strip() == \
                f"/var/lib/machines/{name}/var/log/journal/{mid}"
        else:  # the files are on the test host; the tree only has the (unmounted) mount point
            files = testhost.run(f"ls {link}").stdout.split()
            assert "system.journal" in files
        out = testhost.run(["journalctl", "-m", f"_MACHINE_ID={mid}", "-o", "cat",
                            "--no-pager"]).stdout
        assert "Startup finished" in out
        out = testhost.run(["journalctl", "-M", name, "-o", "cat", "--no-pager"]).stdout
        assert "Startup finished" in out
    finally:
        testhost.run(["machinectl", "poweroff", name], check=False)
        deadline = time.monotonic() + 20
        while testhost.run(["machinectl", "show", name], check=False).returncode == 0:
            if time.monotonic() > deadline:
                testhost.run(["machinectl", "terminate", name], check=False)
                break
            time.sleep(0.2)
        mounted = testhost.run(f"grep ' {link} ' /proc/self/mountinfo", check=False).stdout
        testhost.run(["rm", "-rf", link], check=False)
    assert mounted == ""
    if mode == "host":
        assert list((tree / f"var/log/journal/{mid}").iterdir()) == []


def test_link_journal_from_a_trusted_nspawn_file(run, busybox_root, jid):
    trusted = Path("/run/systemd/nspawn") / f"{busybox_root.name}.nspawn"
    trusted.parent.mkdir(parents=True, exist_ok=True)
    trusted.write_text("[Exec]\nLinkJournal=host\n")
    try:
        assert journal_mounts(run().stdout) == [f"/var/log/journal/{jid}"]
        # the command line wins over the file (--settings=yes)
        assert journal_mounts(run("--link-journal=no").stdout) == []
    finally:
        trusted.unlink()
    assert (JOURNAL / jid).is_dir()
