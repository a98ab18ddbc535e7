"""Building machine trees for nspawnpyctl create: the scratch directory that becomes the tree
only when complete, the busybox system, the Debian touch-ups, and imports."""

import os
import shutil
import subprocess

from .. import linux
from ..errors import UserError

BUSYBOX = "/bin/busybox"
RENAME_NOREPLACE = 1
AT_FDCWD = -100
INITTAB = """\
# busybox init: a root shell on the console; ^]^]^] or poweroff ends the machine.
console::respawn:-/bin/sh
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/sync
"""
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
SHADOW = "root::19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
OS_RELEASE = 'NAME=BusyBox\nID=busybox\nPRETTY_NAME="BusyBox"\n'


class Scratch:
    """A hidden directory .#NAME.XXXX beside the final tree (same file system)."""

    def __init__(self, parent: str, name: str):
        import tempfile
        self.path = tempfile.mkdtemp(prefix=f".#{name}.", dir=parent)
        os.chmod(self.path, 0o755)

    def commit(self, final: str) -> None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(AT_FDCWD, self.path.encode(), AT_FDCWD, final.encode(),
                          RENAME_NOREPLACE) != 0:
            err = ctypes.get_errno()
            raise UserError(f"Cannot move the new tree to {final}: {os.strerror(err)}")

    def discard(self) -> None:
        """Remove the half-built tree; first detach anything a killed builder left mounted."""
        below = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4]
                if point.startswith(self.path + "/"):
                    below.append(point)
        for point in sorted(below, key=len, reverse=True):
            try:
                linux.umount2(point, linux.MNT_DETACH)
            except OSError:
                pass
        shutil.rmtree(self.path, ignore_errors=True)


def busybox(dest: str) -> None:
    """A static busybox system without a network: a root shell on the console when booted."""
    if not os.path.exists(BUSYBOX):
        raise UserError(f"{BUSYBOX} is missing (apt-get install busybox-static).")
    for d, mode in (("bin", 0o755), ("sbin", 0o755), ("etc", 0o755), ("proc", 0o555),
                    ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("root", 0o700),
                    ("tmp", 0o1777), ("var", 0o755), ("var/tmp", 0o1777), ("usr", 0o755),
                    ("usr/bin", 0o755), ("usr/sbin", 0o755)):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
        os.chmod(os.path.join(dest, d), mode)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin/busybox"))
    listed = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True)
    for applet in listed.stdout.split():
        link = os.path.join(dest, applet)
        if os.path.dirname(applet) in ("bin", "sbin", "usr/bin", "usr/sbin") and \
                not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
    for rel, text, mode in (("etc/passwd", PASSWD, 0o644), ("etc/group", GROUP, 0o644),
                            ("etc/shadow", SHADOW, 0o640), ("etc/os-release", OS_RELEASE, 0o644),
                            ("etc/inittab", INITTAB, 0o644), ("etc/machine-id", "", 0o444)):
        _write(os.path.join(dest, rel), text, mode)


def _write(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def prepare_debian(dest: str) -> None:
    """After debootstrap: an empty machine-id (the guest makes its own at first boot), no
    hostname copied from the host (the machine's name is used), and a root without a
    password so the console login works (Debian's PAM allows it: nullok; no securetty)."""
    _write(os.path.join(dest, "etc/machine-id"), "", 0o444)
    try:
        os.unlink(os.path.join(dest, "etc/hostname"))
    except FileNotFoundError:
        pass
    shadow = os.path.join(dest, "etc/shadow")
    with open(shadow) as f:
        lines = f.read().splitlines()
    lines = [":".join(["root", ""] + line.split(":")[2:]) if line.startswith("root:") else line
             for line in lines]
    _write(shadow, "\n".join(lines) + "\n", 0o640)


def default_mirror(distribution: str) -> str:
    if distribution == "ubuntu":
        return "http://archive.ubuntu.com/ubuntu"
    for path in sorted(_apt_sources()):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if path.endswith(".sources") and words[:1] == ["URIs:"] and len(words) > 1:
                return words[1]
            if path.endswith(".list") and words[:1] == ["deb"]:
                uris = [w for w in words[1:] if not w.startswith("[")]
                if uris:
                    return uris[0]
    return "http://deb.debian.org/debian"


def _apt_sources() -> list:
    found = ["/etc/apt/sources.list"]
    try:
        found += [os.path.join("/etc/apt/sources.list.d", n)
                  for n in os.listdir("/etc/apt/sources.list.d")]
    except OSError:
        pass
    return found


def import_source(source: str, dest: str) -> None:
    """Copy a directory (owners, modes, links, devices, xattrs kept) or unpack a tarball (any
    compression tar recognises)."""
    if os.path.isdir(source):
        cmd = ["cp", "-a", "--reflink=auto", os.path.join(source, "."), dest]
        what = f"copying {source}"
    elif os.path.isfile(source):
        cmd = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf",
               source, "-C", dest]
        what = f"{source} is not a tarball that tar can unpack"
    else:
        raise UserError(f"--from={source}: no such directory or file.")
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["failed"])[0]
        raise UserError(f"Import failed, {what} ({detail}); nothing was created.")
