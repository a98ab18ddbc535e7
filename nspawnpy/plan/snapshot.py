"""--template= and --ephemeral: trees made from other trees.

Ephemeral runs use an overlay whose upper layer lives next to the image in a
`.#NAME.ephemeral-XXXX` directory; it is deleted at exit, by the janitor after
a SIGKILL, and (if all else failed) by the next ephemeral start.

Runs in: the host side, before clone; the clean-up in the supervisor or the janitor.
"""

import os
import shutil

from ..errors import UserError


def populate_from_template(template: str, root: str) -> None:
    """Copy the template into a missing or empty directory, keeping owners and modes."""
    if os.path.isdir(root) and os.listdir(root):
        return
    if not os.path.isdir(template):
        raise UserError(f"Template directory {template} does not exist.")
    os.makedirs(os.path.dirname(root.rstrip("/")) or "/", exist_ok=True)
    try:
        shutil.copytree(template, root, symlinks=True, copy_function=_copy_keep_owner,
                        dirs_exist_ok=True)
        for top, dirs, files in os.walk(template):
            for name in dirs + files:
                source = os.path.join(top, name)
                st = os.lstat(source)
                os.lchown(os.path.join(root, os.path.relpath(source, template)), st.st_uid, st.st_gid)
        st = os.stat(template)
        os.chown(root, st.st_uid, st.st_gid)
        os.chmod(root, st.st_mode & 0o7777)
    except OSError as e:
        raise UserError(f"Failed to populate {root} from template {template}: {e.strerror}") from None


def _copy_keep_owner(source, dest):
    shutil.copy2(source, dest, follow_symlinks=False)


def ephemeral_layer(root: str, cleanups: list) -> str:
    """Create the on-disk upper layer for --ephemeral; held by a flock while in use."""
    import fcntl
    parent, base = os.path.split(root.rstrip("/"))
    remove_stale(parent)
    path = f"{parent}/.#{base}.ephemeral-{os.urandom(8).hex()}"
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    # The lock goes with the layer: until then no other start takes it for a stale one.
    from ..supervisor.cleanups import Cleanup
    cleanups.append(Cleanup("rmtree", (path, fd), (fd,)))
    return path


def remove_stale(parent: str) -> None:
    """Delete ephemeral layers whose owner is gone (nobody holds their lock)."""
    import fcntl
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(".#") and ".ephemeral-" in name):
            continue
        path = f"{parent}/{name}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
