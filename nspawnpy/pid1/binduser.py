"""--bind-user=: the bound users' records in /run/host/userdb and their home directories at
/run/host/home/NAME, as nspawn 252 lays them out: both directories 0755, every file and link
the container root's; per user NAME.group, NAME.user-privileged (0600, if there is a password
hash), NAME.user, each also reachable as UID.group, UID.user-privileged, UID.user (links).

Runs in: the set-up process (PID 1's parent with a user namespace), before pivot_root.
"""

import os

from .. import intree
from . import mounts


def setup(root: str, users, owner) -> None:
    """Write the records of `users` (plan.binduser.BoundUser) and bind their homes; `owner`
    is the container root's host UID."""
    with intree.at(root, "/run/host", "dir") as host:  # in our /run tmpfs
        for name in ("home", "userdb"):
            os.mkdir(f"{host}/{name}", 0o755)
            os.chmod(f"{host}/{name}", 0o755)
            mounts.give([f"{host}/{name}"], owner)
        for user in users:
            write_records(f"{host}/userdb", user, owner)
    for user in users:
        mounts.Bind(user.home, f"/run/host/home/{user.name}").execute(root)


def write_records(userdb: str, user, owner) -> None:
    """One user's files and links, in nspawn's order (group, privileged part, user)."""
    records = [(".group", user.group_record, 0o644)]
    if user.privileged_record is not None:
        records.append((".user-privileged", user.privileged_record, 0o600))
    records.append((".user", user.user_record, 0o644))
    for suffix, data, mode in records:
        link, path = f"{userdb}/{user.uid}{suffix}", f"{userdb}/{user.name}{suffix}"
        os.symlink(f"{user.name}{suffix}", link)
        mounts.write_file(path, data, mode)
        os.chmod(path, mode)
        mounts.give([link, path], owner)
