"""Teardown as data: every "undo this later" the host side, the supervisor or a plan step
registers is a Cleanup (a kind and plain arguments), run by one executor table. The same
list is run by the supervisor at exit, by the janitor after a killed supervisor and by the
slim supervisor (supervisor/slim.py) after it was handed over across exec(); an executor's
module (pyroute2, dbus-next, ...) is imported only when one of its cleanups runs.

Runs in: the host side (a failed plan), the supervisor, the slim supervisor and the janitor.
"""

import os

from ..record import Record


class Cleanup(Record):
    """One thing to undo: EXECUTORS[kind](*args). *fds* are the descriptors among the
    arguments (or held for a lock the undoing releases): they stay open until it runs."""
    kind: str
    args: tuple = ()
    fds: tuple = ()
    until_started: bool = False   # only a start that failed undoes it (dropped at go-ahead)


def _rmtree(path: str, lock_fd=None) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
    if lock_fd is not None:
        close_quietly(lock_fd)


def _rmtree_at(dir_fd: int, name: str) -> None:
    import shutil
    shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
    close_quietly(dir_fd)


def unlink_quietly(path: str) -> None:
    """Remove *path* if it is still there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass  # closed already (the supervisor's and the janitor's list are one)


def _release_lock(lock_path: str, lock_fd: int) -> None:
    """Drop a lock file's lock: the file goes, then our descriptor; safe to run twice."""
    unlink_quietly(lock_path)
    close_quietly(lock_fd)


_HERE = __name__
# kind -> (module, function); the module is imported when a cleanup of that kind runs.
EXECUTORS = {
    "rmtree": (_HERE, "_rmtree"),                       # (path[, lock fd]): scratch trees
    "rmtree_at": (_HERE, "_rmtree_at"),                 # (dir fd, name): an in-tree work dir
    "close": (_HERE, "close_quietly"),                         # (fd,): an ID-mapped mount's fd
    "unlink": (_HERE, "unlink_quietly"),                       # (path,): an ephemeral image copy
    "image_mount_point": ("nspawnpy.supervisor.imagemount", "remove_mount_point"),  # (dir,)
    "journal_link": ("nspawnpy.plan.journal", "remove_made"),   # (path, dev, ino)
    "userns_range": (_HERE, "_release_lock"),           # (lock path, lock fd): a picked range
    "tunnel": ("nspawnpy.supervisor.propagate", "teardown"),    # (path, fd)
    "cgroups": ("nspawnpy.supervisor.cgroup", "teardown"),      # (units left, cgroups made)
    "links": ("nspawnpy.supervisor.network", "teardown_links"),  # a Network's state
    "machined": ("nspawnpy.supervisor.register", "unregister"),  # (machine,)
    "record": ("nspawnpy.supervisor.publish", "remove_record"),  # (machine, leader)
}


def execute(cleanup: Cleanup) -> None:
    module, function = EXECUTORS[cleanup.kind]
    getattr(__import__(module, fromlist=[function]), function)(*cleanup.args)


def run_all(cleanups, log=None) -> None:
    """Newest first; a failing one is reported through *log* (if given) and the rest run."""
    for cleanup in reversed(cleanups):
        try:
            execute(cleanup)
        except Exception as e:  # noqa: BLE001 - finish tearing down, then report
            if log is not None:
                log(f"Cleanup failed: {e}")


def started(cleanups: list) -> None:
    """The container started: drop what only a failed start undoes (in place)."""
    cleanups[:] = [c for c in cleanups if not c.until_started]


def held_fds(cleanups) -> list[int]:
    return [fd for c in cleanups for fd in c.fds if fd is not None]
