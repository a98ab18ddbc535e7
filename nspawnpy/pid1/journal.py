"""The guest side of --link-journal= (plan/journal.py does the host side): the tree's
/var/log/journal, resolved and made in the tree, then the machine's journal directory or a
bind mount of the host's one.

Runs in: PID 1, before pivot_root; is_mount_point also on the host side.
"""

import os
import sys

from .. import intree, linux
from ..errors import UserError

JOURNAL = "/var/log/journal"


class GuestJournal:
    """The step PID 1 runs on the unpivoted tree: /var/log/journal in the tree, then the
    journal directory itself ("dir", for a host symlink), a bind mount of the host's
    directory ("bind"), or nothing more (None)."""

    def __init__(self, q: str, p: str, try_: bool, link):
        self.q, self.p, self.try_, self.link = q, p, try_, link

    def __repr__(self) -> str:
        return f"GuestJournal({self.p}, link={self.link}, try={self.try_})"

    def __call__(self, root: str) -> None:
        q, p, try_, link = self.q, self.p, self.try_, self.link
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


def _make_journal_dir(root: str, where: str, q: str, warn: bool) -> None:
    try:
        intree.make_dir(root, where)
    except OSError as e:
        if warn:
            _warn(f"Failed to create directory {q}: {e.strerror}")
            return
        raise UserError(f"Failed to create {q}: {os.strerror(e.errno)}") from None


def _bind_host_journal(root: str, where: str, q: str, p: str) -> None:
    """--link-journal=host: the host's directory bound onto the guest's (in the tree)."""
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
