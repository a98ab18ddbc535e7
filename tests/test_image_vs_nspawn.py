"""-i compared with systemd-nspawn 252 on the same image: the probe's view of the container
(tests/differential/probe.sh) under both tools, for a single ext4 file system image and the
options that change how the image is mounted. nspawn 252 wants udev for -i; it gets a fake
udev control socket (tests/fakeudev.py), which is all it needs for an image without a
partition table. The differences allowed are listed, with their reasons, in EXPLAINED."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import diskimage
import rootfs
import test_image
import testhost
from conftest import PYTHON, _nspawnpy_env, leftovers, skip_unless

HERE = Path(__file__).resolve().parent
from differential import facts as factlib  # noqa: E402

COMMON = ("--register=no", "-q", "--keep-unit", "--console=pipe")
# fact (regular expression) -> why it differs
EXPLAINED = {
    r"mountinfo\./(home)?#0\.source": "the loop device's descriptor number (/proc/self/fd/N) "
                                       "in each tool's process (a GPT partition: nspawn's is "
                                       "the kernel's partition device's)",
    r"mountinfo\./(home)?#0\.dev": "which loop device (or partition) each run got",
    r"mountinfo\./run/host/incoming#\d\.\w+": "nspawn's /run is tests/fakeudev.py's overlay",
    r"mountinfo\./#0\.super": "--volatile=overlay only: the overlay's layers are named by "
                              "nspawn's temporary directories and by nspawnpy's descriptors",
}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A file system image of a busybox tree holding the probe, and beside it (vs-gpt.raw)
    a GPT image of the same tree with a /home partition, swap and a no-auto /srv."""
    skip_unless(testhost.systemd_nspawn(), "systemd-nspawn is not installed")
    skip_unless(subprocess.run(["which", "unshare"], capture_output=True).returncode == 0,
                "unshare is missing (util-linux)")
    d = Path(tmp_path_factory.mktemp("imgvs"))
    tree = rootfs.busybox_tree(d / "tree")
    (tree / "usr/bin/probe").write_bytes((HERE / "differential/probe.sh").read_bytes())
    (tree / "usr/bin/probe").chmod(0o755)
    (tree / "lost+found").mkdir(0o700)
    image = diskimage.ext4(d / "vs.raw", tree)
    if os.uname().machine == "x86_64":
        home = d / "home"
        (home / "alice").mkdir(parents=True)
        diskimage.gpt(d / "vs-gpt.raw", [
            diskimage.Part(diskimage.ROOT_X86_64, image),
            diskimage.Part(diskimage.HOME, diskimage.ext4(d / "home.fs", home, 8)),
            diskimage.Part(diskimage.SWAP, 1 << 20),
            diskimage.Part(diskimage.SRV, 1 << 20, flags=diskimage.FLAG_NO_AUTO)])
    yield image
    assert leftovers(str(d)) == []


def run(tool: str, image: Path, machine: str, options: tuple) -> tuple[int, dict, str]:
    argv = [*COMMON, "-M", machine, *options, "-i", str(image), "/usr/bin/probe"]
    if tool == "nspawnpy":
        cmd, env = [PYTHON, "-m", "nspawnpy", *argv], _nspawnpy_env()
    else:
        cmd, env = [PYTHON, str(HERE / "fakeudev.py"), testhost.systemd_nspawn(), *argv], None
    with testhost.ScratchCgroup("img") as cg:
        r = subprocess.run(cmd, preexec_fn=cg.enter, env=env, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    if tool != "nspawnpy":
        testhost.clean_nspawn_runtime(machine)
    ctx = factlib.Context(str(image.parent / "tree"), str(image.parent), machine)
    return r.returncode, factlib.facts(r.stdout, ctx), r.stderr


@pytest.mark.parametrize("kind, options", [
    *[("fs", o) for o in [(), ("--read-only",), ("-U",), ("--read-only", "-U"),
                          ("--volatile=state",), ("--volatile=overlay",), ("-x",),
                          ("--private-network",)]],
    *[("gpt", o) for o in [(), ("--read-only",), ("-U",)]],
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_the_container_on_an_image_looks_as_under_systemd_nspawn(image, kind, options):
    if kind == "gpt":
        skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
        image = image.parent / "vs-gpt.raw"
    machine = f"imgvs-{secrets.token_hex(3)}"
    theirs_status, theirs, theirs_err = run("systemd-nspawn", image, machine, options)
    ours_status, ours, ours_err = run("nspawnpy", image, machine, options)
    assert theirs.get("probe.complete") == "yes", theirs_err
    assert ours_status == theirs_status and ours["probe.complete"] == "yes", ours_err
    differing = {k: (theirs.get(k), ours.get(k)) for k in set(theirs) | set(ours)
                 if theirs.get(k) != ours.get(k)}
    unexplained = {k: v for k, v in differing.items()
                   if not any(re.fullmatch(p, k) for p in EXPLAINED)
                   or (k == "mountinfo./#0.super" and "--volatile=overlay" not in options)}
    assert unexplained == {}
    assert "mountinfo./#0.source" not in differing or \
        re.fullmatch(r"/proc/self/fd/\d+", differing["mountinfo./#0.source"][1])
    if kind == "gpt":
        assert ours["mountinfo./home#0.fstype"] == "ext4" and "mountinfo./srv#0.fstype" not in ours


@pytest.mark.parametrize("case", sorted(test_image.HOSTILE))
def test_a_hostile_image_is_refused_as_systemd_nspawn_refuses_it(image, case):
    """Both exit 1; where nspawn's first line names the image, ours says the same first
    (after it, ours may give the reason in parentheses, and always stays one line)."""
    skip_unless(os.uname().machine == "x86_64", "the test images' root type is x86-64's")
    d = image.parent / case
    d.mkdir()
    bad = test_image.HOSTILE[case][0](d, image.parent / "tree")
    machine = f"imgvs-{secrets.token_hex(3)}"
    outcome = {}
    for tool in ("systemd-nspawn", "nspawnpy"):
        argv = [*COMMON, "-M", machine, "-i", str(bad), "/bin/true"]
        cmd = [PYTHON, "-m", "nspawnpy", *argv] if tool == "nspawnpy" else \
            [PYTHON, str(HERE / "fakeudev.py"), testhost.systemd_nspawn(), *argv]
        with testhost.ScratchCgroup("imgh") as cg:
            r = subprocess.run(cmd, preexec_fn=cg.enter, capture_output=True, text=True,
                               timeout=60, stdin=subprocess.DEVNULL,
                               env=_nspawnpy_env() if tool == "nspawnpy" else None)
        outcome[tool] = (r.returncode, r.stderr.strip().splitlines())
    testhost.clean_nspawn_runtime(machine)
    (theirs, their_lines), (ours, our_lines) = outcome["systemd-nspawn"], outcome["nspawnpy"]
    assert (theirs, ours, len(our_lines)) == (1, 1, 1), outcome
    # (an ext4 magic over random bytes: libblkid's deeper superblock checks reject some of
    # them before any mount, where nspawnpy, which checks the magic only, lets mount(2) refuse)
    if their_lines and their_lines[0].startswith(str(bad)) and case != "ext4-magic-over-garbage":
        assert our_lines[0].startswith(their_lines[0].rstrip(".")), outcome


def search_run(tool: str, machine: str) -> tuple[int, str]:
    argv = [*COMMON, "-M", machine, "/bin/sh", "-c", "head -1 /etc/os-release"]
    cmd = [PYTHON, "-m", "nspawnpy", *argv] if tool == "nspawnpy" else \
        [PYTHON, str(HERE / "fakeudev.py"), testhost.systemd_nspawn(), *argv]
    with testhost.ScratchCgroup("imgs") as cg:
        r = subprocess.run(cmd, preexec_fn=cg.enter, capture_output=True, text=True, timeout=60,
                           env=_nspawnpy_env() if tool == "nspawnpy" else None,
                           stdin=subprocess.DEVNULL)
    if tool != "nspawnpy":
        testhost.clean_nspawn_runtime(machine)
    return r.returncode, r.stdout


def test_machine_search_picks_the_directory_or_raw_image_systemd_nspawn_picks(image):
    """NAME.raw in /var/lib/machines beats a directory NAME further down the search path; a
    directory NAME beats NAME.raw in the same place; a symlink NAME.raw is followed."""
    import shutil
    name = f"nspawnpy-test-imgs-{secrets.token_hex(3)}"
    raw, var_dir = Path(f"/var/lib/machines/{name}.raw"), Path(f"/var/lib/machines/{name}")
    local_dir = Path(f"/usr/local/lib/machines/{name}")
    tree = image.parent / "tree"
    try:
        local_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, raw)
        shutil.copytree(tree, local_dir, symlinks=True)
        (local_dir / "etc/os-release").write_text("NAME=usr-local-dir\n")
        seen = [search_run(tool, name) for tool in ("systemd-nspawn", "nspawnpy")]
        shutil.copytree(tree, var_dir, symlinks=True)
        (var_dir / "etc/os-release").write_text("NAME=var-dir\n")
        seen += [search_run(tool, name) for tool in ("systemd-nspawn", "nspawnpy")]
        shutil.rmtree(var_dir)
        raw.unlink()
        raw.symlink_to(image)
        seen += [search_run(tool, name) for tool in ("systemd-nspawn", "nspawnpy")]
        assert [s[1] for s in seen] == ['NAME=BusyBox\n'] * 2 + ["NAME=var-dir\n"] * 2 + \
            ['NAME=BusyBox\n'] * 2, seen
    finally:
        for d in (var_dir, local_dir):
            shutil.rmtree(d, ignore_errors=True)
        if raw.is_symlink() or raw.exists():
            raw.unlink()
