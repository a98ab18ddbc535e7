"""--link-journal=: tie the guest's /var/log/journal/MACHINE-ID to the host's, as nspawn 252.

  guest  the journal stays in the tree; the host gets a symlink /var/log/journal/ID -> TREE/...
  host   the journal lives on the host in /var/log/journal/ID, bind-mounted into the guest
  auto   whatever the host already has: a symlink to the tree (guest), a directory (host),
         else nothing
  try-*  like guest/host, but a step that cannot be done skips the link instead of failing

The host side (symlink, mkdir, removing a stale link) is done here by the supervisor before
the container starts; `link_journal()` returns the guest side (directories in the tree, the
bind mount) as a step that the container's PID 1 runs on the unpivoted tree.

Like nspawn, the guest-mode symlink is left on the host when the machine stops, so that
`journalctl -m` / `-M` keep finding the guest's journal; the next start reuses it.

Runs in: the host side, before clone; the returned step runs in PID 1 before pivot_root.
"""

import os
import sys

from ..errors import UserError

JOURNAL = "/var/log/journal"
HOST_MACHINE_ID = "/etc/machine-id"


def link_journal(settings, root: str, machine_id: str):
    """Do the host side now; return the step for the guest side, or None."""
    mode = settings.link_journal
    if mode == "no" or settings.ephemeral:  # nspawn never links an ephemeral machine's journal
        return None
    try_ = mode.startswith("try-") or mode == "auto"
    mode = mode.removeprefix("try-")
    if machine_id == host_machine_id():
        message = f"Host and machine ids are equal ({machine_id}): refusing to link journals"
        if try_:
            _warn(message)
            return None
        raise UserError(message)

    # The guest's /var, /var/log, /var/log/journal come first; on a read-only tree they cannot.
    if settings.read_only and settings.volatile == "no":
        from .. import intree
        for d in ("/var", "/var/log", JOURNAL):
            if not intree.exists(root, d):
                if try_:
                    return None
                raise UserError(f"Failed to create {d}: Read-only file system")

    p = f"{JOURNAL}/{machine_id}"
    q = root + p
    if os.path.lexists(p) and is_mount_point(p):
        if try_:
            return _guest_side(q, p, try_, None)
        raise UserError(f"{p}: already a mount point, refusing to use for journal")

    try:
        target = os.readlink(p)
    except FileNotFoundError:
        pass
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
    else:
        target = os.path.normpath(os.path.join(JOURNAL, target))
        if mode in ("guest", "auto") and target == os.path.normpath(q):
            return _guest_side(q, p, try_, "dir")
        try:
            os.unlink(p)  # a link to elsewhere (an old tree, a moved machine) is replaced
        except OSError as e:
            raise UserError(f"Failed to remove symlink {p}: {e.strerror}") from None

    if mode == "guest":
        try:
            os.symlink(q, p)
        except OSError as e:
            if try_:
                return _guest_side(q, p, try_, None)
            raise UserError(f"Failed to symlink {q} to {p}: {e.strerror}") from None
        return _guest_side(q, p, try_, "dir")

    if mode == "host":
        try:
            os.mkdir(p, 0o755)  # not its parents: a host without a persistent journal keeps none
        except FileExistsError:
            pass
        except OSError as e:
            if try_:
                return _guest_side(q, p, try_, None)
            raise UserError(f"Failed to create {p}: {e.strerror}") from None
    elif not os.path.lexists(p):
        return _guest_side(q, p, try_, None)
    return _guest_side(q, p, try_, "bind")


def _guest_side(q: str, p: str, try_: bool, link):
    """The step PID 1 runs: /var/log/journal in the tree, then the journal directory
    itself ("dir", for a host symlink) or a bind mount of the host's directory ("bind")."""

    def step(root: str) -> None:
        from .. import intree  # the tree's /var/log/journal, resolved and made in the tree
        for d in ("/var", "/var/log", JOURNAL):
            try:
                os.close(intree.chase(root, d, "dir"))
            except OSError as e:
                # EROFS, or EACCES for a user namespace's root in a tree it does not own
                # (--private-users-ownership=off): a try-* mode links nothing, quietly.
                if e.errno in (30, 13) and try_:
                    return
                raise UserError(f"Failed to create {d}: {os.strerror(e.errno)}") from None
        if link is None:
            return
        where = intree.canonical(root, p, missing_ok=True)
        if is_mount_point(intree.host_path(root) + where):  # e.g. a --bind= onto it
            if try_:
                return
            raise UserError(f"{q}: already a mount point, refusing to use for journal")
        if link == "dir":
            _make_journal_dir(root, where, q, warn=True)
            return
        _bind_host_journal(root, where, q, p)

    step.link_journal = link  # for tests and debugging: what the guest side will do
    return step


def _make_journal_dir(root: str, where: str, q: str, warn: bool) -> None:
    from .. import intree
    try:
        with intree.parent_of(root, where) as inner:
            os.mkdir(inner, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        if warn:
            _warn(f"Failed to create directory {q}: {e.strerror}")
            return
        raise UserError(f"Failed to create {q}: {os.strerror(e.errno)}") from None


def _bind_host_journal(root: str, where: str, q: str, p: str) -> None:
    """--link-journal=host: the host's directory bound onto the guest's (in the tree)."""
    from .. import intree, linux
    try:
        with intree.at(root, where) as inner:
            if os.listdir(inner):
                _warn(f"{q} is not empty, proceeding anyway.")
    except OSError:
        pass
    _make_journal_dir(root, where, q, warn=False)
    try:
        with intree.at(root, where) as inner:
            linux.mount(p, inner, None, linux.MS_BIND)
    except OSError as e:
        raise UserError("Failed to bind mount journal from host into guest: "
                        f"{e.strerror}") from None


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


def is_mount_point(path: str) -> bool:
    """Is `path` (its last component not followed) a mount point in our mount namespace?"""
    where = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == where:
            return True
    return False


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit() and len(s[i + 1:i + 4]) == 3:
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _warn(message: str) -> None:
    try:
        os.write(2, (message + "\n").encode())
    except OSError:
        sys.stderr.write(message + "\n")
