"""The container's /proc/self/mountinfo compared line by line with systemd-nspawn 252's:
mount points, parents, roots, per-mount and superblock options, propagation (shared /
master, with the peer groups renumbered in order of appearance) and the order of the lines,
including the hidden copies that propagation leaves below /run/host and /proc.

Normalised away: mount IDs, device numbers, the random part of nspawn's scratch file names,
and the order of the cgroup v1 controllers below /sys/fs/cgroup (nspawn mounts them in the
order of a hash table, which differs from run to run)."""

import re
import shutil
from pathlib import Path

import pytest

from conftest import skip_unless

COMMON = ("--register=no", "--keep-unit", "-q", "--console=pipe")


def normalise(mountinfo: str) -> list[str]:
    """One line per mount: '[parent mount point] root point options propagation - fs'."""
    rows = [line.split() for line in mountinfo.splitlines() if " - " in line]
    points = {row[0]: row[4] for row in rows}
    lines = []
    for row in rows:
        sep = row.index("-")
        text = " ".join([f"[{points.get(row[1], 'outside')}]", *row[3:7], *row[7:sep], "-",
                         *row[sep + 1:]])
        lines.append(re.sub(r"\.#(\S*?)[0-9a-f]{16}//", r".#\1X//", text))
    lines = _sort_cgroup_controllers(lines)
    groups = {}

    def renumber(match):
        groups.setdefault(match.group(2), f"G{len(groups)}")
        return f"{match.group(1)}:{groups[match.group(2)]}"
    return [re.sub(r"(shared|master|propagate_from):(\d+)", renumber, line) for line in lines]


def _sort_cgroup_controllers(lines: list[str]) -> list[str]:
    block = [i for i, line in enumerate(lines) if line.startswith("[/sys/fs/cgroup] ")]
    ordered = sorted(lines[i] for i in block)
    out = list(lines)
    for i, line in zip(block, ordered):
        out[i] = line
    return out


@pytest.fixture
def bind_source(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    return source


SCENARIOS = {
    "plain": [],
    "private-network": ["--private-network"],
    "read-only": ["--read-only"],
    "custom-mounts": ["--bind={src}:/mnt/b", "--tmpfs=/mnt/t", "--bind-ro={src}:/mnt/r"],
    "timezone-and-resolv-bound": ["--timezone=bind", "--resolv-conf=bind-host"],
    "as-pid2": ["-a"],                   # the stub is PID 1: the host's cgroup layout decides
    "userns": ["-U"],
    "userns-private-network": ["-U", "--private-network"],
    "userns-read-only": ["-U", "--read-only"],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_busybox_mountinfo_is_nspawns(busybox_root, run_nspawnpy, systemd_nspawn, bind_source,
                                      scenario):
    args = [a.format(src=bind_source) for a in SCENARIOS[scenario]]
    _compare(busybox_root, run_nspawnpy, systemd_nspawn, args)


def test_debian_tree_mountinfo_is_nspawns_with_the_hybrid_cgroup_tree(
        debian_root, run_nspawnpy, systemd_nspawn):
    """A tree whose systemd copies with the hybrid layout gets cgroup2 at unified/ even for a
    plain command (nspawn decides from the tree, not from --boot)."""
    out = _compare(debian_root, run_nspawnpy, systemd_nspawn, [])
    if Path("/sys/fs/cgroup/unified").is_dir():
        assert any(" /sys/fs/cgroup/unified " in line for line in out)


def test_busybox_tree_gets_no_unified_tree_even_when_booted(busybox_root, run_nspawnpy):
    (busybox_root / "etc/inittab").write_text("::sysinit:/bin/cat /proc/self/mountinfo\n"
                                              "::sysinit:/sbin/poweroff\n")
    r = run_nspawnpy(*COMMON, "-b", "-D", busybox_root, timeout=60)
    assert " /sys/fs/cgroup/unified " not in r.stdout and " /sys/fs/cgroup " in r.stdout


def _compare(root, run_nspawnpy, systemd_nspawn, args) -> list[str]:
    skip_unless(shutil.which("cat") is not None, "no cat")
    theirs = systemd_nspawn([*COMMON, "-D", str(root), *args, "/bin/cat", "/proc/self/mountinfo"])
    assert theirs.returncode == 0, theirs.stderr
    ours = run_nspawnpy(*COMMON, "-D", root, *args, "/bin/cat", "/proc/self/mountinfo")
    assert ours.returncode == 0, ours.stderr
    expected = normalise(theirs.stdout)
    assert normalise(ours.stdout) == expected
    return expected


OWNERS = ("ls -lnaR /dev /run/host | grep -v '^total' | sed -E 's/ +/ /g' | cut -d' ' -f1,3,4,9- "
          "| sed -E 's/[0-9]+:[0-9]+ //'; ls -lnd /run /tmp /dev/shm /sys/fs/cgroup | "
          "sed -E 's/ +/ /g' | cut -d' ' -f1,3,4,9; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status")


@pytest.mark.parametrize("options", [[], ["-U"], ["-U", "--private-network"]])
def test_dev_run_host_owners_and_capabilities_are_nspawns(busybox_root, run_nspawnpy,
                                                          systemd_nspawn, options):
    """Device nodes made for the container (real ones, owned by its root under -U), /run/host,
    the API tmpfs and the capability sets, as nspawn makes them."""
    args = [*COMMON, "-D", str(busybox_root), *options, "/bin/sh", "-c", OWNERS]
    theirs = systemd_nspawn(args)
    ours = run_nspawnpy(*args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)


# Where the host's / is shared (any host systemd runs; this machine's is private, the test
# host's is shared), mounts that come from the host (the tree, --bind=, /run/host/os-release,
# /etc/localtime) are slaves of the host's peer group under nspawn: the propagation shows.
TESTHOST_SCENARIOS = {
    "plain": [], "bind": ["--bind=/home:/mnt"], "userns": ["-U", "--bind=/home:/mnt"],
    "userns-chown": ["--private-users=pick", "--private-users-ownership=chown"],
    "userns-read-only": ["-U", "--read-only"],
}


@pytest.fixture(scope="module")
def host_tree(testhost):
    import rootfs
    tree = rootfs.busybox_tree(testhost.root / "var/lib/machines/mountview")
    yield testhost, "/var/lib/machines/mountview"
    rootfs.rmtree(tree)


@pytest.mark.parametrize("scenario", sorted(TESTHOST_SCENARIOS))
def test_mountinfo_is_nspawns_where_the_hosts_root_is_shared(host_tree, scenario):
    host, tree = host_tree
    outputs = []
    for tool in ("systemd-nspawn", "nspawnpy"):
        r = host.run(["systemd-run", "--wait", "--pipe", "--collect", "-q", "-p", "Delegate=yes",
                      "--", tool, *COMMON, "-D", tree, *TESTHOST_SCENARIOS[scenario],
                      "/bin/cat", "/proc/self/mountinfo"], check=False)
        assert r.returncode == 0, r.stderr
        outputs.append(normalise(r.stdout))
    assert outputs[1] == outputs[0]
    assert any(" master:" in line for line in outputs[0])
