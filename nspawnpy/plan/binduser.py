"""--bind-user= / BindUser=: which host users the container gets, at which of its UIDs, and
the user and group records it finds for them in /run/host/userdb, with nspawn 252's rules
and refusals (seen from systemd-nspawn 252 itself):

- the host user comes from the host's user database (NSS, shadow included); root, nobody,
  a user whose UID or GID lies in the container's range, and one whose primary group is not
  named like it are refused;
- its container UID (also its GID) is the first of 60514..60577 (and below the range's size)
  that the tree's /etc/passwd does not use as a UID nor its /etc/group as a GID; a name the
  tree's /etc/passwd or /etc/group already has is refused;
- the records are compact JSON with a newline: userName, uid, gid, homeDirectory
  (/run/host/home/NAME) and service for the user, groupName, gid and service for the group,
  and the password hash, if the host's shadow entry has one, in NAME.user-privileged.

Runs in: the host side, before clone.
"""

import os

from .. import intree
from ..errors import UserError
from ..record import Record

MAP_UID_MIN, MAP_UID_MAX = 60514, 60577
SERVICE = "io.systemd.NSpawn"
HOME = "/run/host/home"
NOBODY = 65534


class BoundUser(Record):
    """One host user made available in the container."""
    name: str
    uid: int                # in the container (UID and GID alike)
    host_uid: int
    host_gid: int
    home: str               # the host's home directory, bound at /run/host/home/NAME
    user_record: bytes
    group_record: bytes
    privileged_record: bytes | None   # NAME.user-privileged (mode 0600), if any

    def map_pair(self) -> tuple:
        """(container ID, host UID, host GID) for the container's UID and GID maps."""
        return self.uid, self.host_uid, self.host_gid


def resolve(names: list, root, base: int, size: int) -> tuple:
    """The BoundUsers for these names (repeats dropped), in order; UserError for nspawn's
    refusals: its sentence, then the option it concerns (as for a bad value)."""
    try:
        return _resolve(names, root, base, size)
    except UserError as e:
        raise UserError(f"{e.message} (--bind-user=)") from None


def _resolve(names: list, root, base: int, size: int) -> tuple:
    user_names, uids = _tree_entries(root, "/etc/passwd")
    group_names, gids = _tree_entries(root, "/etc/group")
    bound, candidate = [], MAP_UID_MIN
    for name in dict.fromkeys(names):
        pw, gr = _host_user(name, base, size)
        candidate = _free_id(candidate, size, uids | gids)
        if name in user_names:
            raise UserError(f"Sorry, the user '{name}' already exists in the container.")
        if gr.gr_name in group_names:
            raise UserError(f"Sorry, the group '{gr.gr_name}' already exists in the container.")
        bound.append(_bound_user(pw, candidate))
        candidate += 1
    return tuple(bound)


def _host_user(name: str, base: int, size: int):
    """The host's passwd and group entries of a user that may be bound."""
    import grp
    import pwd
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise UserError(f"Failed to resolve user '{name}': No such process") from None
    if pw.pw_uid == 0 or name == "root":
        raise UserError("Mapping 'root' user not supported, sorry.")
    if pw.pw_uid == NOBODY or name == "nobody":
        raise UserError("Mapping 'nobody' user not supported, sorry.")
    if base <= pw.pw_uid < base + size:
        raise UserError(f"UID of user '{name}' to map is already in container UID range, refusing.")
    try:
        gr = grp.getgrgid(pw.pw_gid)
    except KeyError:
        raise UserError(f"Failed to resolve group of user '{name}': No such process") from None
    if base <= gr.gr_gid < base + size:
        raise UserError(f"GID of group '{gr.gr_name}' to map is already in container GID range, "
                        "refusing.")
    if gr.gr_name != name:
        raise UserError("Sorry, mapping users without private groups is currently not supported.")
    return pw, gr


def _free_id(candidate: int, size: int, used: set) -> int:
    """The first ID from *candidate* on that the tree uses neither as a UID nor as a GID.
    It must also lie inside the container's range (nspawn 252 checks only that it is not
    beyond the range's size, and aborts on an assertion when it equals it)."""
    while candidate in used:
        candidate += 1
    if candidate > MAP_UID_MAX or candidate >= size:
        raise UserError(f"No suitable available UID in range {MAP_UID_MIN}\u2026{MAP_UID_MAX} "
                        "in container detected, can't map user.")
    return candidate


def _bound_user(pw, uid: int) -> BoundUser:
    import json

    def compact(value) -> bytes:
        return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    name = pw.pw_name
    user = {"userName": name, "uid": uid, "gid": uid, "homeDirectory": f"{HOME}/{name}",
            "service": SERVICE}
    group = {"groupName": name, "gid": uid, "service": SERVICE}
    hashed = shadow_password(name)
    privileged = compact({"privileged": {"hashedPassword": [hashed]}}) if hashed is not None \
        else None
    return BoundUser(name, uid, pw.pw_uid, pw.pw_gid, pw.pw_dir, compact(user), compact(group),
                     privileged)


def shadow_password(name: str):
    """The password field of the host's shadow entry (through NSS), if it looks like a hash:
    locked ones ('!...') and an empty one are kept, 'x' and '*' (after any '!') are not."""
    import ctypes

    class Spwd(ctypes.Structure):  # (its first two fields: all we read)
        _fields_ = [("sp_namp", ctypes.c_char_p), ("sp_pwdp", ctypes.c_char_p)]
    getspnam = ctypes.CDLL(None).getspnam  # (Python's spwd is deprecated, gone in 3.13)
    getspnam.restype = ctypes.POINTER(Spwd)
    entry = getspnam(name.encode())
    if not entry or entry.contents.sp_pwdp is None:
        return None
    hashed = entry.contents.sp_pwdp.decode(errors="surrogateescape")
    if hashed.lstrip("!") in ("x", "*"):
        return None
    return hashed


def _tree_entries(root, path: str) -> tuple:
    """(names, IDs) of the tree's /etc/passwd or /etc/group (the ID is the third field),
    resolved in the tree; none if it has no such file (or no tree is given). Lines that do not
    parse are skipped."""
    if root is None:
        return set(), set()
    try:
        fd = intree.resolve(root, path)
    except FileNotFoundError:
        return set(), set()
    except OSError as e:
        raise UserError(f"Failed to open {path} of container: {os.strerror(e.errno)}") from None
    try:
        import stat
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"Failed to iterate through {path} of container: Is a directory")
        if not stat.S_ISREG(mode):  # a FIFO or device would block or read the host's
            raise UserError(f"Failed to open {path} of container: Not a regular file")
        with open(intree.fd_path(fd), "rb") as f:
            data = f.read(1 << 24)
    finally:
        os.close(fd)
    names, ids = set(), set()
    for line in data.decode(errors="surrogateescape").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] and fields[2].isdigit():
            names.add(fields[0])
            ids.add(int(fields[2]))
    return names, ids
