"""--link-journal=: tie the guest's /var/log/journal/MACHINE-ID to the host's, as nspawn 252.

  guest  the journal stays in the tree; the host gets a symlink /var/log/journal/ID -> TREE/...
  host   the journal lives on the host in /var/log/journal/ID, bind-mounted into the guest
  auto   whatever the host already has: a symlink to the tree (guest), a directory (host),
         else nothing
  try-*  like guest/host, but a step that cannot be done skips the link instead of failing

The host side (symlink, mkdir, removing a stale link) is done here before the container
starts; `link_journal()` returns the guest side (pid1/journal.py's GuestJournal: directories
in the tree, the bind mount), which the container's PID 1 runs on the unpivoted tree.

Like nspawn, the guest-mode symlink is left on the host when the machine stops, so that
`journalctl -m` / `-M` keep finding the guest's journal; the next start reuses it. A link
(or host-mode directory) this run made is removed again if the container never started
(its guest side or a later step failed, or the supervisor died before the go-ahead): nspawn
makes the tree's directories before the link, so a tree it cannot start gets none either.

Runs in: the host side, before clone; the returned step runs in PID 1 before pivot_root.
"""

import os

from ..errors import UserError
from ..pid1.journal import JOURNAL, GuestJournal, _warn, is_mount_point

HOST_MACHINE_ID = "/etc/machine-id"


def link_journal(settings, root: str, machine_id: str, cleanups: list, keep: bool = True):
    """Do the host side now, registering the undoing of what it made on `cleanups`;
    return the step for the guest side, or None. *keep*: a link made is left when the
    container stopped (not for a disk image: its tree's path is gone with its mounts)."""
    mode = settings.link_journal
    if mode == "no" or settings.ephemeral:  # nspawn never links an ephemeral machine's journal
        return None
    try_ = mode.startswith("try-") or mode == "auto"
    mode = mode.removeprefix("try-")
    if not _may_link(settings, root, machine_id, try_):
        return None
    p = f"{JOURNAL}/{machine_id}"
    q = root + _in_tree(root, p)  # the host's link leads where the guest's journal is made
    made = _Made(p)
    link = _host_side(mode, p, q, try_, made)
    if made.ident is not None:
        from ..supervisor.cleanups import Cleanup
        cleanups.append(Cleanup("journal_link", (p, *made.ident), until_started=keep))
    return GuestJournal(q, p, try_, link)


class _Made:
    """What the host side made at /var/log/journal/ID (its device and inode), removed at
    exit unless the container started (remove_made, a Cleanup until the go-ahead)."""

    def __init__(self, path: str):
        self.path, self.ident = path, None

    def record(self) -> None:
        st = os.lstat(self.path)
        self.ident = (st.st_dev, st.st_ino)


def remove_made(path: str, dev: int, ino: int) -> None:
    """Remove what this run made at *path*, never what another run or the admin put there."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) != (dev, ino):
            return
        if os.path.islink(path):
            os.unlink(path)
        else:
            os.rmdir(path)  # host mode: only while empty
    except OSError:
        pass


def _may_link(settings, root: str, machine_id: str, try_: bool) -> bool:
    """False (or a UserError without try-) where nspawn refuses to link at all."""
    if machine_id == host_machine_id():
        message = f"Host and machine ids are equal ({machine_id}): refusing to link journals"
        if try_:
            _warn(message)
            return False
        raise UserError(message)
    # The guest's /var, /var/log, /var/log/journal come first; on a read-only tree they cannot.
    if settings.read_only and settings.volatile == "no":
        from .. import intree
        for d in ("/var", "/var/log", JOURNAL):
            if not intree.exists(root, d):
                if try_:
                    return False
                raise UserError(f"Failed to create {d}: Read-only file system")
    return True


def _host_side(mode: str, p: str, q: str, try_: bool, made: _Made):
    """The host's /var/log/journal/ID for `mode`; returns what the guest side then does:
    "dir" (the host links to the tree), "bind" (the host's directory is bound in) or None."""
    if os.path.lexists(p) and is_mount_point(p):
        if try_:
            return None
        raise UserError(f"{p}: already a mount point, refusing to use for journal")
    if _clear_the_way(mode, p, q):
        return "dir"
    if mode == "guest":
        try:
            os.symlink(q, p)
        except OSError as e:
            if try_:
                return None
            raise UserError(f"Failed to symlink {q} to {p}: {e.strerror}") from None
        made.record()
        return "dir"
    if mode == "host":
        try:
            os.mkdir(p, 0o755)  # not its parents: a host without a persistent journal keeps none
            made.record()
        except FileExistsError:
            pass
        except OSError as e:
            if try_:
                return None
            raise UserError(f"Failed to create {p}: {e.strerror}") from None
    elif not os.path.lexists(p):
        return None
    return "bind"


def _clear_the_way(mode: str, p: str, q: str) -> bool:
    """True if `p` already links to the tree's journal (guest/auto); else remove a link to
    elsewhere, or (guest) an empty directory, from `p`."""
    try:
        target = os.readlink(p)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno != 22:  # EINVAL: there, but not a symlink
            raise UserError(f"readlink({p}) failed: {e.strerror}") from None
        if mode == "guest":
            try:
                os.rmdir(p)
            except NotADirectoryError:
                raise UserError(f"{p} already exists and is neither a symlink nor a directory") \
                    from None
            except OSError as e:
                raise UserError(f"Failed to remove {p}: {e.strerror}") from None
        return False
    target = os.path.normpath(os.path.join(JOURNAL, target))
    if mode in ("guest", "auto") and target == os.path.normpath(q):
        return True
    try:
        os.unlink(p)  # a link to elsewhere (an old tree, a moved machine) is replaced
    except OSError as e:
        raise UserError(f"Failed to remove symlink {p}: {e.strerror}") from None
    return False


def _in_tree(root: str, path: str) -> str:
    """`path` as the tree's links lead to it, in the tree (what PID 1 will make), rather
    than where the host would follow them; the path as written if that cannot be told."""
    from .. import intree
    try:
        return intree.canonical(root, path, missing_ok=True)
    except OSError:
        return path


def host_machine_id() -> str:
    try:
        with open(HOST_MACHINE_ID) as f:
            value = f.read().strip()
    except OSError as e:
        raise UserError(f"Failed to retrieve machine ID: {e.strerror}") from None
    if value in ("", "uninitialized"):
        raise UserError("Failed to retrieve machine ID: No medium found")
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise UserError("Failed to retrieve machine ID: Invalid argument")
    return value.lower()
