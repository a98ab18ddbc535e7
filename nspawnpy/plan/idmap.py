"""ID-mapped bind mounts (--bind=SRC:DST:idmap, :rootidmap), as systemd-nspawn 252 makes
them: a detached clone of the source whose IDs the kernel maps through a user namespace of
ours, made here as the host's root and put in place by PID 1 (a mount fd survives clone()).

With the container's UID range starting at X (0 without -U), of size Y, and P the owner of
the source on the host:
  idmap      the container's user Z is the host's Z         (map: on disk 0.. -> X..)
  rootidmap  the container's root is P, everyone else nobody (map: on disk P -> X)
nspawn 252 has no owneridmap, and its idmap needs -U (without, writing the map fails).

Runs in: the host side, before clone.
"""

import os

from .. import linux
from ..errors import UserError


def mapping(option: str, source: str, base: int, size: int) -> str:
    """The uid_map/gid_map line of the namespace describing the bind's ID mapping."""
    if option == "rootidmap":
        st = os.stat(source)
        return f"{st.st_uid} {base} 1\n"
    return f"0 {base} {size}\n"


def idmapped_clone(source: str, option: str, recursive: bool, userns, where: str) -> int:
    """A detached, ID-mapped clone of *source* (close-on-exec mount fd); *where* (the bind's
    destination on the host) only names it in errors, with nspawn's wording."""
    base, size = (userns.base, userns.size) if userns is not None else (0, 0x10000)
    if option == "idmap" and userns is None:
        # nspawn writes an empty map for it (no -U: a range of size 0) and says so twice
        raise UserError("Failed to write UID map: Invalid argument\n"
                        f"Failed to map ids for bind mount {where}: Invalid argument")
    ns_fd = mapping_userns(mapping(option, source, base, size))
    tree = None
    try:
        tree = linux.open_tree(source, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC
                               | (linux.AT_RECURSIVE if recursive else 0))
        linux.mount_setattr(tree, linux.MOUNT_ATTR_IDMAP, ns_fd,
                            flags=linux.AT_EMPTY_PATH | (linux.AT_RECURSIVE if recursive else 0))
        return tree
    except OSError as e:
        if tree is not None:
            os.close(tree)
        raise UserError(f"Failed to map ids for bind mount {where}: "
                        f"{os.strerror(e.errno)}") from None
    finally:
        os.close(ns_fd)


def mapping_userns(line: str) -> int:
    """An fd of a fresh user namespace with *line* as its UID and GID map (a child makes the
    namespace and waits while we write the maps and open it)."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise UserError("Failed to create a user namespace for an ID-mapped bind mount.")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child}/{name}", "w") as f:
                f.write(line)
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"Failed to write UID map: {os.strerror(e.errno)}") from None
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(child, 0)
