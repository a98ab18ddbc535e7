"""--user= resolved as systemd-nspawn 252 resolves it: by running the container's own getent
(`getent passwd USER`, then `getent initgroups USER`) inside the container, never by reading
its files.  A tree without getent cannot run a payload as another user, as with nspawn.

What nspawn 252 does, as observed here: /usr/bin/getent, else /bin/getent, runs with an empty
environment, stdin and stderr on /dev/null and no other descriptor; only the first line of its
output counts.  No output at all: "Failed to resolve user X." (fatal).  A non-zero exit status
after output is only reported.  Of the passwd line only the UID, GID and home directory are
used (the name and shell are not); the initgroups line lists the user and then every group.

Runs in: PID 1, after pivot_root (so whatever getent is and does stays in the container),
before it takes on the payload's user.
"""

import os

from .. import errors

GETENT = ("/usr/bin/getent", "/bin/getent")
LINE_MAX = 1 << 20          # nspawn's limit on one line read from getent
INVALID_IDS = (0xFFFF, 0xFFFFFFFF)  # "nobody" of 16-bit IDs and (uid_t) -1: never valid
PASSWD_FIELDS = ("user", "password", "UID", "GID", "GECOS", "home directory")


class Account:
    """The user the payload runs as: `name` as given to --user=, the rest from getent."""
    __slots__ = ("name", "uid", "gid", "home", "groups")

    def __init__(self, name, uid, gid, home, groups):
        self.name, self.uid, self.gid = name, uid, gid
        self.home, self.groups = home, groups


def resolve(name: str) -> Account:
    """The account --user=NAME names, as the container's getent reports it."""
    uid, gid, home = parse_passwd(lookup("passwd", name, name))
    groups = parse_initgroups(lookup("initgroups", name, name))
    return Account(name, uid, gid, home, groups)


def lookup(database: str, key: str, user: str) -> str:
    """The first line `getent DATABASE KEY` prints in the container (without its newline)."""
    reader, writer = os.pipe()  # both close-on-exec: getent gets only its stdout end
    pid = os.fork()
    if pid == 0:
        _exec_getent(writer, database, key)
    os.close(writer)
    try:
        data = _read_line(reader)
    finally:
        os.close(reader)
    if not data:
        # nothing printed (no getent, no such user): nspawn fails here without waiting
        raise errors.UserError(f"Failed to resolve user {user}.")
    _report_status(database, os.waitpid(pid, 0)[1])
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _exec_getent(stdout: int, database: str, key: str) -> None:
    """In the forked child: getent with nothing of PID 1 but the pipe; never returns."""
    try:
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(stdout, 1)
        os.dup2(null, 2)
        os.closerange(3, 1 << 16)
        for path in GETENT:
            try:
                os.execve(path, ["getent", database, key], {})
            except OSError:
                continue
    finally:
        os._exit(127)


def _read_line(fd: int) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
        if len(data) > LINE_MAX and b"\n" not in data[:LINE_MAX]:
            raise errors.UserError("Failed to read from getent: No buffer space available")
    return data


def _report_status(database: str, status: int) -> None:
    """nspawn reports a failing getent whose output it still uses, and carries on."""
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        message = f"getent {database} failed with exit status {os.WEXITSTATUS(status)}."
    elif os.WIFSIGNALED(status):
        message = f"getent {database} terminated by signal {_signal_name(os.WTERMSIG(status))}."
    else:
        return
    os.write(2, message.encode() + b"\n")


def _signal_name(number: int) -> str:
    import _signal
    names = {getattr(_signal, n): n for n in dir(_signal)
             if n.startswith("SIG") and not n.startswith("SIG_") and n.isupper()}
    return names.get(number, str(number))


def parse_passwd(line: str) -> tuple[int, int, str]:
    """UID, GID and home directory of a passwd line, with nspawn's complaints."""
    fields = line.split(":")
    # each of the first six fields must end in a colon (the home directory's too)
    if len(fields) <= len(PASSWD_FIELDS):
        raise errors.UserError(
            f"/etc/passwd entry has invalid {PASSWD_FIELDS[len(fields) - 1]} field.")
    uid = _parse_id(fields[2])
    if uid is None:
        raise errors.UserError("Failed to parse UID of user.")
    gid = _parse_id(fields[3])
    if gid is None:
        raise errors.UserError("Failed to parse GID of user.")
    return uid, gid, fields[5]


def parse_initgroups(line: str) -> list[int]:
    """The groups of an initgroups line ("USER GID GID ..."): the first word is the user."""
    groups = [_parse_id(word) for word in line.split()[1:]]
    if None in groups:
        raise errors.UserError("Failed to parse group data from getent: Invalid argument")
    return groups


def _parse_id(text: str):
    """A user or group ID as systemd parses one (decimal without sign or leading zero,
    32 bits, not one of the invalid ones), else None."""
    if not text.isdigit() or not text.isascii() or (text[0] == "0" and text != "0"):
        return None
    value = int(text)
    return value if value < 1 << 32 and value not in INVALID_IDS else None


def make_home(account: Account) -> None:
    """As nspawn: missing parents made 0775 (root's), a missing home 0755 and the user's;
    one that exists, or is no directory, is left as it is."""
    parents = []
    parent = os.path.dirname(account.home.rstrip("/"))
    while parent not in ("", "/") and not os.path.lexists(parent):
        parents.append(parent)
        parent = os.path.dirname(parent)
    for path in reversed(parents):
        try:
            os.mkdir(path, 0o775)
            os.chmod(path, 0o775)
        except OSError as e:
            raise errors.UserError(f"Failed to make home root directory: {e.strerror}") from None
    try:
        os.mkdir(account.home, 0o755)
    except (FileExistsError, NotADirectoryError):
        return
    except OSError as e:
        raise errors.UserError(f"Failed to make home directory: {e.strerror}") from None
    os.chmod(account.home, 0o755)
    os.chown(account.home, account.uid, account.gid)
