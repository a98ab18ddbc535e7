"""Root file system trees for the tests: built from real Debian packages, never faked.

Three kinds of tree:

* ``busybox_tree(dest)``   a tiny static-busybox system, built fresh in well under a second;
* ``debian_tree(dest)``    Debian bookworm (minbase + systemd), restored from a cached tarball;
* ``testhost_tree(dest)``  the systemd test host of /work/shared/TESTHOST.md, cached likewise.

The Debian trees are made once per machine with debootstrap (about a minute each) and kept as
zstd tarballs in CACHE_DIR (``/var/tmp/nspawnpy-cache``, or ``$NSPAWNPY_CACHE``).  Builders take
an exclusive flock on the cache, so parallel pytest sessions build each tarball once and never
see a half-written one (tarballs are renamed into place when complete).  The cache key includes
the package list, so changing it here rebuilds.  When debootstrap cannot reach a mirror,
``RootfsUnavailable`` is raised (the fixtures turn it into a skip), and the failure is remembered
for the rest of the process so a dead mirror costs one attempt, not one per test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE_DIR = Path(os.environ.get("NSPAWNPY_CACHE", "/var/tmp/nspawnpy-cache"))
BUSYBOX = Path("/bin/busybox")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT = 1200
# Bump when the way trees are post-processed changes (invalidates cached tarballs).
FORMAT_VERSION = "2"

DEBIAN_PACKAGES = ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "iproute2")
TESTHOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "systemd-container", "udev",
    "iproute2", "python3", "python3-dbus-next", "python3-pystemd", "python3-pyroute2",
    "python3-pytest", "busybox-static", "dnsmasq-base", "util-linux", "procps",
)

ALICE_UID = 1000
WHEEL_GID = 10


class RootfsUnavailable(Exception):
    """A tree could not be built on this machine (no debootstrap, no mirror, ...)."""


# ---------------------------------------------------------------------------------------------
# busybox


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
wheel:x:10:alice
alice:x:1000:
nogroup:x:65534:
"""
SHADOW = """\
root:*:19000:0:99999:7:::
alice:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
"""
OS_RELEASE = """\
NAME=BusyBox
ID=busybox
VERSION_ID=1
PRETTY_NAME="BusyBox 1"
"""
# busybox init: SIGINT runs the ctrlaltdel action; /sbin/poweroff sends SIGUSR2 to init, which
# runs the shutdown actions, kills everything and calls reboot(RB_POWER_OFF) -- in a PID namespace
# that ends PID 1 with SIGINT, which systemd-nspawn reports as a clean shutdown (exit 0).
# SIGUSR1 halts and SIGTERM reboots (PID 1 dies with SIGHUP) the same way.  With no respawn
# entries init simply waits for signals.  (busybox init ignores SIGRTMIN+3/+4, systemd's
# halt/poweroff signals.)
INITTAB = """\
::sysinit:/bin/true
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/true
"""


# systemd-nspawn 252 resolves --user= by running getent in the container (as nspawnpy does);
# busybox has none, so the tree gets a small one.
GETENT = """#!/bin/sh
# getent passwd|group KEY (by name or number); getent initgroups USER (primary + member gids)
case "$1" in
passwd|group)
    awk -F: -v k="$2" '$1 == k || $3 == k { print; f = 1; exit } END { exit !f }' "/etc/$1" ;;
initgroups)
    gid=$(awk -F: -v k="$2" '$1 == k { print $4 }' /etc/passwd)
    [ -n "$gid" ] || exit 2
    more=$(awk -F: -v u="$2" '{ n = split($4, m, ","); for (i = 1; i <= n; i++)
        if (m[i] == u) printf " %s", $3 }' /etc/group)
    echo "$2 $gid$more" ;;
*) exit 1 ;;
esac
"""


def busybox_tree(dest: Path | str, busybox: Path | str = BUSYBOX) -> Path:
    """Build a busybox root file system at *dest* (created; may exist and be empty)."""
    dest = Path(dest)
    busybox = Path(busybox)
    if not busybox.exists():
        raise RootfsUnavailable(f"{busybox} is missing (apt-get install busybox-static)")
    dest.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "proc", "sys", "dev", "run", "etc", "root", "var/tmp", "usr/bin",
              "usr/sbin", "home/alice"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700)):
        (dest / d).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / d, mode)
    os.chown(dest / "home/alice", ALICE_UID, ALICE_UID)

    shutil.copy2(busybox, dest / "bin/busybox")
    for applet in _busybox_applets(busybox):
        if applet in ("busybox", "") or "/" in applet:
            continue
        link = dest / "bin" / applet
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    for applet in ("init", "poweroff", "reboot", "halt"):
        link = dest / "sbin" / applet
        if not os.path.lexists(link):
            os.symlink("../bin/busybox", link)

    etc = dest / "etc"
    _write(etc / "passwd", PASSWD)
    _write(etc / "group", GROUP)
    _write(etc / "shadow", SHADOW, 0o640)
    _write(etc / "os-release", OS_RELEASE)
    _write(etc / "machine-id", "")
    _write(etc / "inittab", INITTAB)
    _write(dest / "usr/bin/getent", GETENT, 0o755)
    return dest


_applets_cache: dict[str, list[str]] = {}


def _busybox_applets(busybox: Path) -> list[str]:
    key = str(busybox.resolve())
    if key not in _applets_cache:
        out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True,
                             text=True).stdout
        _applets_cache[key] = out.split()
    return _applets_cache[key]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


# ---------------------------------------------------------------------------------------------
# Debian trees via debootstrap, cached as tarballs


def debian_tree(dest: Path | str) -> Path:
    """Restore Debian bookworm (minbase + systemd, dbus) into *dest*."""
    return _restore(_cached_tarball("debian", DEBIAN_PACKAGES), Path(dest))


def testhost_tree(dest: Path | str) -> Path:
    """Restore the test host tree (TESTHOST.md) into *dest*."""
    return _restore(_cached_tarball("testhost", TESTHOST_PACKAGES), Path(dest))


def debian_tarball() -> Path:
    return _cached_tarball("debian", DEBIAN_PACKAGES)


def testhost_tarball() -> Path:
    return _cached_tarball("testhost", TESTHOST_PACKAGES)


def mirror() -> str:
    """The Debian mirror the host's apt sources name (deb822 first, then sources.list)."""
    srcdir = Path("/etc/apt/sources.list.d")
    for f in sorted(srcdir.glob("*.sources")) if srcdir.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.split()
            if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                    and fields.get("uris")):
                return fields["uris"][0]
    lists = [Path("/etc/apt/sources.list")]
    lists += sorted(srcdir.glob("*.list")) if srcdir.is_dir() else []
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return DEFAULT_MIRROR


_failures: dict[str, str] = {}
_checked: set[Path] = set()


def _cache_key(name: str, packages: tuple[str, ...]) -> str:
    h = hashlib.sha256(
        "\0".join((FORMAT_VERSION, SUITE, "minbase", *sorted(packages))).encode()).hexdigest()
    return f"{name}-{SUITE}-{h[:12]}"


@contextlib.contextmanager
def _locked(name: str):
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_tarball(name: str, packages: tuple[str, ...]) -> Path:
    key = _cache_key(name, packages)
    tarball = CACHE_DIR / f"{key}.tar.zst"
    if tarball in _checked:
        return tarball
    if key in _failures:
        raise RootfsUnavailable(_failures[key])
    with _locked(name):
        if not tarball.exists():
            try:
                _build_tarball(tarball, packages)
            except RootfsUnavailable as e:
                _failures[key] = str(e)
                raise
            for old in CACHE_DIR.glob(f"{name}-*.tar.zst"):
                if old != tarball:
                    old.unlink(missing_ok=True)
    _checked.add(tarball)
    return tarball


def _build_tarball(tarball: Path, packages: tuple[str, ...]) -> None:
    if not shutil.which("debootstrap"):
        raise RootfsUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    if not shutil.which("zstd"):
        raise RootfsUnavailable("zstd is not installed (apt-get install zstd)")
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR))
    try:
        tree = build / "root"
        # A private mount namespace: whatever debootstrap mounts inside the target (proc, sys,
        # ...) disappears with it, even when it fails half-way.
        cmd = ["unshare", "--mount", "--propagation", "private", "debootstrap",
               "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(tree), mirror()]
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=DEBOOTSTRAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RootfsUnavailable(f"debootstrap timed out after {DEBOOTSTRAP_TIMEOUT}s")
        if r.returncode != 0:
            log = (tree / "debootstrap/debootstrap.log")
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RootfsUnavailable(
                f"debootstrap {SUITE} from {mirror()} failed ({r.returncode}): "
                f"{(r.stderr or r.stdout)[-1500:]}\n{tail}")
        _tidy_debian(tree)
        tmp = tarball.with_name(f".{tarball.name}.{os.getpid()}.tmp")
        subprocess.run(
            ["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "--xattrs-include=*",
             "--acls", "-I", "zstd -T0 -3 -q", "-cf", str(tmp), "."],
            check=True, stdin=subprocess.DEVNULL)
        os.rename(tmp, tarball)
    finally:
        _rmtree(build)


def _tidy_debian(tree: Path) -> None:
    """Shrink a freshly built tree and apply _fix_tree() before archiving it."""
    _fix_tree(tree)
    # Documentation and translations are ~40% of the files: restoring is faster without them.
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        d = tree / sub
        if d.is_dir():
            shutil.rmtree(d)
            d.mkdir()
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = tree / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and p.name != "lock":
                    p.unlink()


def _restore(tarball: Path | str, dest: Path | str) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-C", str(dest), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
         "-I", "zstd -d -q", "-xpf", str(tarball)],
        check=True, stdin=subprocess.DEVNULL)
    _fix_tree(dest)
    return dest


restore = _restore  # restore(tarball, dest): public name for fixtures


def _fix_tree(tree: Path) -> None:
    """What every restored Debian tree must look like (cheap; also applied on restore)."""
    # debootstrap copies the build host's hostname; it would override -M inside.
    (tree / "etc/hostname").unlink(missing_ok=True)
    # The package scripts write a machine ID at build time; every copy would share it.
    # Empty means "not yet initialised": systemd then uses the container UUID (or a random ID).
    mid = tree / "etc/machine-id"
    if mid.is_file() and mid.stat().st_size:
        with open(mid, "w"):
            pass
    dbus_id = tree / "var/lib/dbus/machine-id"
    if dbus_id.parent.is_dir() and not dbus_id.is_symlink():
        dbus_id.unlink(missing_ok=True)
        dbus_id.symlink_to("/etc/machine-id")


def _rmtree(path: Path) -> None:
    """Remove a tree, refusing to descend into anything still mounted below it."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    mounted = [m for m in _mountpoints() if m == str(path) or m.startswith(str(path) + "/")]
    if mounted:
        raise RuntimeError(f"refusing to remove {path}: still mounted: {mounted}")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True)


def _mountpoints() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return out


def rmtree(path: Path | str) -> None:
    """Public: remove a test tree (refuses if anything is still mounted below it)."""
    _rmtree(Path(path))
