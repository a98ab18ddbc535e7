"""nspawnpyctl remove NAME: delete a stopped machine's tree and its .nspawn files."""

import os

from . import state
from ..errors import UserError

HELP = "remove a stopped machine's tree and its .nspawn files"
SETTINGS_DIRS = ("/etc/systemd/nspawn", "/run/systemd/nspawn")


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")


def mounts_below(path: str) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return found


def run(args) -> int:
    state.require_root()
    machine = state.lookup(args.name)
    if machine is None or machine.root is None:
        raise UserError(f"No machine '{args.name}' known.")
    if machine.state == "running":
        raise UserError(f"Machine '{args.name}' is running; stop it first.")
    tree = os.path.realpath(machine.root)
    if mounts_below(tree):
        raise UserError(f"Machine '{args.name}' has mounts below {tree}; not removing it.")
    remove_tree(tree, args.name)
    for directory in (*SETTINGS_DIRS, os.path.dirname(tree)):
        try:
            os.unlink(os.path.join(directory, f"{args.name}.nspawn"))
        except FileNotFoundError:
            pass
    return 0


def remove_tree(tree: str, name: str) -> None:
    """rmtree under the tree's own flock (a launcher using it holds that lock)."""
    import fcntl
    import shutil
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"Machine '{name}' is in use (its tree {tree} is locked).") from None
        shutil.rmtree(tree)   # fd-based on Linux: never follows the tree's symlinks
    except OSError as e:
        raise UserError(f"Failed to remove {e.filename or tree}: {e.strerror}") from None
    finally:
        os.close(fd)
