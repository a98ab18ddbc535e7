"""The custom mounts (--bind, --bind-ro, --tmpfs, --overlay, --overlay-ro, --inaccessible)
as mount ops, sorted by destination, and the host directories they need: an empty bind
source or a temporary overlay upper layer lives in one scratch directory below /var/tmp,
made only when some mount needs it; an overlay's work dir goes next to its upper layer.

Runs in: the host side, before clone; PID 1 executes the ops (pid1/mounts.py).
"""

import os

from ..errors import UserError
from ..linux import MS_NODEV
from ..pid1 import mounts as m
from ..pid1.overlay import Overlay
from ..pid1.fsplan import MS_STRICTATIME
from ..supervisor.cleanups import Cleanup


# Mount option words that are mount(2) flags, not file system data: word -> (bit, set it?).
_FLAG_WORDS = {}
for _bit, _on, _off in ((0x1, "ro", "rw"), (0x2, "nosuid", "suid"), (0x4, "nodev", "dev"),
                        (0x8, "noexec", "exec"), (0x10, "sync", "async"),
                        (0x40, "mand", "nomand"), (0x80, "dirsync", None),
                        (0x400, "noatime", "atime"), (0x800, "nodiratime", "diratime"),
                        (0x8000, "silent", "loud"), (1 << 21, "relatime", "norelatime"),
                        (1 << 24, "strictatime", "nostrictatime"),
                        (1 << 25, "lazytime", "nolazytime")):
    _FLAG_WORDS[_on] = (_bit, True)
    if _off:
        _FLAG_WORDS[_off] = (_bit, False)


def split_mount_options(options: str, flags: int) -> tuple[int, str]:
    """Mount flags and the remaining data of an option string such as 'rw,nosuid,size=1M', as
    nspawn mangles --tmpfs= options: flag words change *flags*, the rest is passed on."""
    data = []
    for word in (options or "").split(","):
        if word in _FLAG_WORDS:
            bit, on = _FLAG_WORDS[word]
            flags = flags | bit if on else flags & ~bit
        elif word and word != "defaults":
            data.append(word)
    return flags, ",".join(data)


class Scratch:
    """The scratch directory, made on first use; its removal is registered on `cleanups`."""

    def __init__(self, cleanups: list):
        self.cleanups, self.path = cleanups, None

    def entry(self, name: str) -> str:
        if self.path is None:
            import tempfile
            self.path = tempfile.mkdtemp(prefix="nspawnpy-", dir="/var/tmp")
            self.cleanups.append(Cleanup("rmtree", (self.path,)))
        return f"{self.path}/{name}"


def custom_mounts(settings, cleanups: list, root: str = "", userns=None) -> tuple:
    """The ops for the custom mounts, so that a mount below another one lands on top of it.
    Host directories made for them are removed by `cleanups`. *root* and *userns* (the
    tree and its UID range) are what ID-mapped binds need."""
    scratch = Scratch(cleanups)
    ops = []
    for read_only, specs in ((False, settings.bind), (True, settings.bind_ro)):
        for source, dest, options in specs:
            ops.append(_bind(source, dest, options, read_only, scratch, len(ops), root, userns,
                             cleanups))
    for path, options in settings.tmpfs:
        flags, data = split_mount_options(options, MS_NODEV | MS_STRICTATIME)
        ops.append(m.Mount(path, "tmpfs", data, flags))
    for read_only, specs in ((False, settings.overlay), (True, settings.overlay_ro)):
        for layers, dest in specs:
            ops.append(Overlay(layers, dest, read_only,
                               _work_dir(layers, read_only, len(ops), scratch, cleanups, root)))
    for path in settings.inaccessible:
        ops.append(m.Mask(path))
    ops.sort(key=lambda op: op.where)
    return tuple(ops)


def _bind(source, dest, options, read_only, scratch, number, root, userns, cleanups):
    in_container = source.startswith("+")
    if source == "":
        source = scratch.entry(f"bind{number}")
        os.makedirs(source, exist_ok=True)
    elif in_container:
        source = source[1:]
    recursive = "norbind" not in options
    idmap = next((o for o in reversed(options) if o in ("idmap", "rootidmap", "noidmap")), None)
    if idmap in ("idmap", "rootidmap"):
        if in_container:
            raise UserError(f"Bind mount {dest}: ID-mapped binds of container paths are not "
                            "supported by nspawnpy yet.")
        from .idmap import idmapped_clone
        fd = idmapped_clone(source, idmap, recursive, userns, root + dest)
        cleanups.append(Cleanup("close", (fd,), (fd,)))
        return m.Attach(dest, fd, read_only)
    return m.Bind(source, dest, read_only=read_only, recursive=recursive, in_container=in_container)


def _work_dir(layers, read_only: bool, number: int, scratch: Scratch, cleanups,
              root: str) -> str | None:
    """Where a writable overlay keeps upper/work: next to its upper layer (on the host, or
    in the tree for a '+' one), else scratch."""
    if read_only or len(layers) < 2:
        return None
    upper = layers[-1]
    if upper.startswith("+"):
        return _work_dir_in_tree(root, upper[1:], cleanups)
    if upper:
        return _work_dir_next_to(upper, cleanups)
    return scratch.entry(f"overlay{number}")


def _work_dir_in_tree(root: str, upper: str, cleanups) -> str:
    """A container-relative upper layer's work dir, `.#UPPERxxxx` beside it in the tree as
    nspawn makes it (overlayfs wants both on one mount), made here with the upper layer, both
    resolved in the tree; returned as a '+' path for PID 1, removed by `cleanups`."""
    from .. import intree
    try:
        where = intree.canonical(root, upper, "dir")
        parent, base = os.path.split(where)
        fd = intree.resolve(root, parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise UserError(f"Failed to create overlay upper directory {upper}: "
                        f"{os.strerror(e.errno)}") from None
    name = f".#{base}{os.urandom(8).hex()}"
    try:
        os.mkdir(name, 0o700, dir_fd=fd)
    except OSError as e:
        os.close(fd)
        raise UserError(f"Failed to create overlay work directory {name}: {e.strerror}") from None
    cleanups.append(Cleanup("rmtree_at", (fd, name), (fd,)))
    return f"+{parent.rstrip('/')}/{name}"


def _work_dir_next_to(upper: str, cleanups) -> str:
    """overlayfs needs its work dir on the upper layer's file system: `.#UPPERxxxx` beside it."""
    parent, base = os.path.split(upper.rstrip("/"))
    work = f"{parent}/.#{base}{os.urandom(8).hex()}"
    try:
        os.mkdir(work, 0o700)
    except OSError as e:
        raise UserError(f"Failed to create overlay work directory {work}: {e.strerror}") from None
    cleanups.append(Cleanup("rmtree", (work,)))
    return work
