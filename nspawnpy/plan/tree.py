"""Which tree, which name and ID, the lock that keeps a second nspawnpy off the same
tree, the checks that the tree can run what was asked, and the payload's capabilities.

Runs in: the host side, before clone.
"""

import os

from ..pid1 import caps
from ..errors import UserError

SEARCH_PATH = ("/etc/machines", "/run/machines", "/var/lib/machines", "/var/lib/container",
               "/usr/local/lib/machines", "/usr/lib/machines")


def find_root(settings) -> tuple[str, bool]:
    """(path, is a disk image) of what the container runs on: -D, -i, the machine's
    directory or image in the search path (per directory: NAME as a directory or block
    device first, then NAME.raw), or the working directory."""
    if settings.directory:
        return settings.directory, False
    if settings.image:
        return settings.image, True
    if settings.machine:
        import stat
        for base in SEARCH_PATH:
            candidate = f"{base}/{settings.machine}"
            try:
                mode = os.stat(candidate).st_mode
            except OSError:
                mode = None
            if mode is not None and (stat.S_ISDIR(mode) or stat.S_ISBLK(mode)):
                return candidate, not stat.S_ISDIR(mode)
            if mode is None and os.path.isfile(candidate + ".raw"):
                return candidate + ".raw", True
        raise UserError(f"No image for machine '{settings.machine}'.")
    return os.getcwd(), False


def default_machine_name(root: str) -> str:
    """Last path component, cleaned up to a valid hostname (host's name for /)."""
    if root == "/":
        import socket
        return socket.gethostname()
    base = os.path.basename(root.rstrip("/"))
    from ..config.values import HOSTNAME_CHARS
    name = "".join(c if c in HOSTNAME_CHARS else "-" for c in base).strip(".-")[:64]
    return name or "container"


def lock_tree(root: str) -> int:
    """An exclusive flock on the tree itself: gone with us, no lock file to leave."""
    import fcntl
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"Directory tree {root} is currently busy.") from None
    return fd


def machine_id(root: str, requested) -> str:
    """The image's /etc/machine-id if set, else --uuid, else random (32 hex)."""
    from .. import intree
    try:  # resolved in the tree: a link to the host's own machine-id must not count
        value = intree.read_file(root, "/etc/machine-id", 4096).decode().strip()
        if len(value) == 32 and all(c in "0123456789abcdef" for c in value) and int(value, 16):
            return value
    except OSError as e:
        if e.errno == 21:  # EISDIR: nspawn gives up on such a tree
            raise UserError("Failed to read machine ID from container image: Is a directory") \
                from None
    except ValueError:  # includes UnicodeDecodeError
        pass
    if requested:
        return requested
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _shifted(private_users) -> bool:
    """A user namespace whose root is not the host's (identity and 0:N map onto it)."""
    if private_users in (None, "no", "identity"):
        return False
    return not (isinstance(private_users, tuple) and private_users[0] == 0)


def kept_capabilities(settings) -> int:
    kept = caps.DEFAULT
    if settings.private_net:
        kept |= 1 << caps.CAP_NET_ADMIN
    elif _shifted(settings.private_users):
        # nspawn's: with a shifted range, in a user namespace that does not own the (host's)
        # network namespace, binding low ports is not possible anyway
        kept &= ~(1 << caps.BY_NAME["cap_net_bind_service"])
    kept |= settings.capability
    kept &= ~settings.drop_capability
    return kept


def check_tree(root: str, settings, image: str | None = None) -> None:
    """Can the tree run what was asked? *image*: the disk image mounted at *root*, named in
    the messages in its place."""
    what = f"Image {image}" if image else f"Directory {root}"
    if not os.path.exists(root):
        raise UserError(f"Failed to resolve path {root}: No such file or directory")
    if not os.path.isdir(root):
        raise UserError(f"Failed to open {root}: Not a directory")
    if settings.volatile == "yes" and any(
            os.path.isdir(root + d) and not os.path.islink(root + d)
            for d in ("/bin", "/sbin", "/lib", "/lib64")):
        raise UserError(f"--volatile=yes needs a merged-/usr tree (/bin, /sbin, /lib, /lib64 as "
                        f"symlinks into /usr), and {image or root} is not one. Refusing.")
    from .. import intree
    if settings.boot and not any(intree.exists(root, p)
                                 for p in ("/etc/os-release", "/usr/lib/os-release")):
        raise UserError(f"{what} doesn't look like an OS root directory "
                        "(os-release file is missing). Refusing.")
    if settings.pivot_root and intree.kind(root, settings.pivot_root[0] + "/usr") != 0o040000:
        raise UserError(f"{what} doesn't look like it has an OS tree (/usr/ directory "
                        "is missing). Refusing.")
    if settings.boot:
        from ..pid1.exec_payload import BOOT_INITS
        if not any(intree.exists(root, p) for p in BOOT_INITS):
            raise UserError(f"{what} lacks an init system "
                            f"({', '.join(BOOT_INITS)}). Refusing.")

