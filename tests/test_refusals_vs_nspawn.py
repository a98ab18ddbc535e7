"""Option combinations compared with systemd-nspawn 252: nspawnpy refuses nothing it accepts
and accepts nothing it refuses, with its wording (exit status, what the payload sees, the
messages); ID-mapped binds (idmap, rootidmap) work under -U as in nspawn."""

import os
import re
import subprocess

import pytest


COMMON = ("--register=no", "--keep-unit", "-q", "--console=pipe")
SHOW = ("ip link 2>/dev/null | grep -c '^[0-9]'; cat /proc/self/uid_map | head -1; "
        "ls -lnd /mnt/b 2>/dev/null | cut -c1-30; touch /mnt/b/made 2>/dev/null && echo made")


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.chown(src, 1234, 1234)
    return src


CASES = {
    "netns-path-and-private-network": ["--network-namespace-path={ns}", "--private-network"],
    "netns-path-and-userns": ["--network-namespace-path={ns}", "-U"],
    "netns-path-and-veth": ["--network-namespace-path={ns}", "--network-veth"],
    "netns-path-alone": ["--network-namespace-path={ns}"],
    "idmap-without-userns": ["--bind={src}:/mnt/b:idmap"],
    "idmap": ["-U", "--bind={src}:/mnt/b:idmap"],
    "rootidmap": ["-U", "--bind-ro={src}:/mnt/b:rootidmap"],
    "rootidmap-writable": ["-U", "--bind={src}:/mnt/b:rootidmap"],
    "noidmap-norbind": ["-U", "--bind={src}:/mnt/b:noidmap,norbind"],
    "owneridmap-is-newer": ["--bind={src}:/mnt/b:owneridmap"],
    "unknown-bind-option": ["--bind={src}:/mnt/b:bogus"],
}


def _messages(stderr: str) -> list[str]:
    # nspawn 252 cannot remove its propagation directory from /run on this host; nspawnpy
    # adds " (--option=)" where nspawn's sentence for a bad value does not name the option.
    return [re.sub(r" \(--?[\w-]+=\)$", "", line) for line in stderr.splitlines()
            if "Attempted to remove disk file system" not in line]


def _observe(run, root, source, args) -> tuple:
    for made in source.glob("made"):
        made.unlink()
    r = run([*COMMON, "-D", str(root), *args, "/bin/sh", "-c", SHOW])
    owners = sorted((p.name, p.stat().st_uid) for p in source.iterdir())
    return r.returncode, r.stdout, _messages(r.stderr), owners


@pytest.mark.parametrize("case", sorted(CASES))
def test_combination_ends_as_under_nspawn(busybox_root, run_nspawnpy, systemd_nspawn, netns,
                                          source, case):
    args = [a.format(ns=netns, src=source) for a in CASES[case]]
    theirs = _observe(systemd_nspawn, busybox_root, source, args)
    ours = _observe(lambda a: run_nspawnpy(*a), busybox_root, source, args)
    assert ours == theirs
