"""/etc/localtime and /etc/resolv.conf compared with systemd-nspawn 252: what the container
sees, what is left in the tree on the host, and the messages, for trees that already have
the files (as links or plain files) or lack them, writable and --read-only."""

import os
from pathlib import Path

import pytest

from conftest import skip_unless
from testhost import systemd_nspawn

COMMON = ("--register=no", "--keep-unit", "-q", "--console=pipe")
SHOW = ("for f in /etc/localtime /etc/resolv.conf; do "
        "if [ -L $f ]; then echo $f link $(readlink $f); "
        "elif [ -e $f ]; then echo $f file $(md5sum < $f); else echo $f missing; fi; done; "
        "grep -cE ' /etc/(localtime|resolv.conf) ' /proc/self/mountinfo")
HOST_ZONE = "Etc/UTC"


def prepare(root: Path, state: str) -> None:
    """Put the tree's /etc files into `state` and give it the host's zone file."""
    zone = root / "usr/share/zoneinfo" / HOST_ZONE
    zone.parent.mkdir(parents=True, exist_ok=True)
    zone.write_bytes(Path("/usr/share/zoneinfo", HOST_ZONE).read_bytes())
    for name in ("localtime", "resolv.conf"):
        (root / "etc" / name).unlink(missing_ok=True)
    if state == "files":
        (root / "etc/localtime").write_text("old\n")
        (root / "etc/resolv.conf").write_text("old\n")
    elif state == "absolute-link":
        (root / "etc/localtime").symlink_to(f"/usr/share/zoneinfo/{HOST_ZONE}")
    elif state == "other-link":
        (root / "etc/localtime").symlink_to(f"../../usr/share/zoneinfo/{HOST_ZONE}")


def tree_state(root: Path) -> list:
    out = []
    for name in ("localtime", "resolv.conf"):
        path = root / "etc" / name
        if path.is_symlink():
            out.append((name, "link", os.readlink(path)))
        elif path.exists():
            out.append((name, "file", path.read_bytes()))
        else:
            out.append((name, "missing"))
    return out


def messages(stderr: str) -> list[str]:
    # nspawn 252 cannot remove its propagation directory from /run on this host
    return [line for line in stderr.splitlines() if "Attempted to remove disk file system" not in line]


def observe(run, root: Path, state: str, options) -> tuple:
    prepare(root, state)
    r = run(["-D", str(root), *options, "/bin/sh", "-c", SHOW])
    return r.returncode, r.stdout, messages(r.stderr), tree_state(root)


@pytest.mark.parametrize("state", ["missing", "files", "absolute-link", "other-link"])
@pytest.mark.parametrize("options", [
    (),
    ("--timezone=symlink", "--resolv-conf=copy-host"),
    ("--read-only",),
    ("--read-only", "--timezone=copy", "--resolv-conf=copy-host"),
    ("--read-only", "--timezone=symlink", "--resolv-conf=replace-host"),
    ("--read-only", "--timezone=delete", "--resolv-conf=delete"),
    ("--resolv-conf=bind-uplink",),      # resolved's files may be missing on the host:
    ("--resolv-conf=copy-stub",),        # nspawn still makes a mount point, or says so
])
def test_etc_files_as_nspawn_makes_them(busybox_root, run_nspawnpy, systemd_nspawn, state, options):
    skip_unless(Path("/etc/resolv.conf").exists(), "host has no /etc/resolv.conf")
    skip_unless(os.path.islink("/etc/localtime")
                and os.readlink("/etc/localtime").endswith("zoneinfo/" + HOST_ZONE),
                f"the host's /etc/localtime is not a link to {HOST_ZONE}")
    theirs = observe(lambda args: systemd_nspawn([*COMMON, *args]), busybox_root, state, options)
    ours = observe(lambda args: run_nspawnpy(*COMMON, *args), busybox_root, state, options)
    assert ours == theirs
