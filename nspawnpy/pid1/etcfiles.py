"""--resolv-conf= and --timezone=: how /etc/resolv.conf and /etc/localtime get
into the container. Each returns a step run by PID 1 on the unpivoted tree.

The tree's /etc and the file in it are resolved inside the tree (a link to the host's
/etc leads nowhere on the host), and the file is written without following a link in its
place or opening a FIFO or device there. As in nspawn, what cannot be done is reported
(or, for a read-only tree or a link in the way, skipped quietly) and the container starts.

Runs in: PID 1, before pivot_root (the steps); the host side picks the step.
"""

import os

from .. import intree, linux
from ..linux import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY

RESOLVED_STUB = "/run/systemd/resolve/stub-resolv.conf"
RESOLVED_UPLINK = "/run/systemd/resolve/resolv.conf"
RESOLVED_STATIC = "/usr/lib/systemd/resolv.conf"


def _host_resolv_source(what: str) -> str:
    return {"host": "/etc/resolv.conf", "stub": RESOLVED_STUB,
            "uplink": RESOLVED_UPLINK, "static": RESOLVED_STATIC}[what]


def resolv_conf_step(mode: str, private_net: bool, read_only: bool):
    if mode == "auto":
        if private_net:
            return None
        mode = "bind-host" if read_only else "copy-host"
    if mode == "off":
        return None
    if mode == "delete":
        return _delete("resolv.conf")
    how, _, what = mode.partition("-")
    source = _host_resolv_source(what)
    if not os.path.exists(source):
        return _missing_source("resolv.conf", source, how)
    return _install("resolv.conf", source, how, shown_source=source)


def _missing_source(name: str, source: str, how: str) -> "EtcStep":
    """The host file is missing: nspawn still makes the bind's mount point, says the bind
    failed and falls back to a copy, which fails too (naming /etc/NAME whatever the source)."""
    return EtcStep(name, _missing, source, how)


def _missing(root: str, etc: int, shown: str, name: str, source: str, how: str) -> None:
    if how == "bind":
        _bind(root, f"/etc/{name}", source, source)
    _warn(f"Failed to copy /etc/{name} to {shown}/{name}, ignoring: {os.strerror(2)}")


def timezone_step(mode: str, read_only: bool):
    host = "/etc/localtime"
    try:
        link = os.readlink(host)
    except OSError:
        link = None
    if mode == "auto":
        if link and "zoneinfo/" in link:
            mode = "symlink" if not read_only else "bind"
        else:
            mode = "bind" if read_only else "copy"
    if mode == "off":
        return None
    if mode == "delete":
        return _delete("localtime")
    if mode == "symlink":
        if not link or "zoneinfo/" not in link:
            return None
        zone = link.split("zoneinfo/", 1)[1]
        return _symlink_zone(zone, os.path.realpath(host))
    if not os.path.exists(host):
        return None
    return _install("localtime", os.path.realpath(host), mode, shown_source=host)


_QUIET = (1, 13, 30, 40)  # EPERM, EACCES, EROFS, ELOOP: a read-only tree or a link in the way


def _warn(message: str) -> None:
    os.write(2, (message + "\n").encode(errors="replace"))


def _open_etc(root: str):
    """The tree's /etc (resolved in the tree) and its host path, or None after a warning."""
    try:
        fd = intree.resolve(root, "/etc")
    except OSError as e:
        _warn(f"Failed to resolve /etc path in container, ignoring: {os.strerror(e.errno)}")
        return None
    return fd, os.readlink(intree.fd_path(fd))


class EtcStep:
    """A step PID 1 runs on the unpivoted tree: action(root, etc_fd, etc_host_path, name,
    *args) on the tree's /etc (resolved in the tree, skipped after a warning if it does
    not resolve). Plain data: the file, a module-level action and its arguments."""

    def __init__(self, name: str, action, *args):
        self.name, self.action, self.args = name, action, args

    @property
    def as_host_root(self) -> bool:
        """With a user namespace nspawn writes /etc/localtime as the host's root (unchowned)."""
        return self.name == "localtime"

    def __repr__(self) -> str:
        return f"EtcStep(/etc/{self.name}: {self.action.__name__.lstrip('_')})"

    def __call__(self, root: str) -> None:
        found = _open_etc(root)
        if found is None:
            return
        try:
            self.action(root, *found, self.name, *self.args)
        finally:
            os.close(found[0])


def _delete(name: str) -> EtcStep:
    return EtcStep(name, _remove)


def _remove(root: str, etc: int, shown: str, name: str) -> None:
    try:
        os.unlink(name, dir_fd=etc)
    except FileNotFoundError:
        pass
    except OSError as e:  # a --read-only tree: nspawn says so and goes on
        _warn(f"Failed to remove '{shown}/{name}', ignoring: {os.strerror(e.errno)}")


def _read_source(source: str):
    with open(source, "rb") as f:
        st = os.fstat(f.fileno())
        return f.read(), (st.st_atime_ns, st.st_mtime_ns)  # a copy keeps the host file's times


def _install(name: str, source: str, how: str, shown_source: str) -> EtcStep:
    """copy: write into the file in place (not through a link); replace: a new file
    renamed over whatever is there; bind: a read-only bind onto the file, falling back to
    a copy when it fails. A zone file is always replaced, as nspawn copies it atomically.
    The host file is read now (on the host side), except for a bind."""
    content = None if how == "bind" else _read_source(source)
    return EtcStep(name, _put, source, how, shown_source, content)


def _put(root: str, etc: int, shown: str, name: str, source: str, how: str, shown_source: str,
         content) -> None:
    if how == "bind" and _bind(root, f"/etc/{name}", shown_source, source):
        return
    data, times = content or _read_source(source)
    write = _replace if how == "replace" or name == "localtime" else _copy
    try:
        write(etc, name, data, times)
    except OSError as e:
        if e.errno not in _QUIET:
            _warn(f"Failed to copy {shown_source} to {shown}/{name}, ignoring: "
                  f"{os.strerror(e.errno)}")


def _copy(etc: int, name: str, data: bytes, times) -> None:
    fd = intree.open_regular(f"{intree.fd_path(etc)}/{name}", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
        os.utime(fd, ns=times)
    finally:
        os.close(fd)


def _replace(etc: int, name: str, data: bytes, times) -> None:
    temporary = f".#{name}{os.urandom(8).hex()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=etc)
    try:
        try:
            os.write(fd, data)
            os.utime(fd, ns=times)
        finally:
            os.close(fd)
        os.rename(temporary, name, src_dir_fd=etc, dst_dir_fd=etc)
    except OSError:
        os.unlink(temporary, dir_fd=etc)
        raise


def _bind(root: str, where: str, shown_source: str, source: str) -> bool:
    """Bind a host file read-only over `where` (a link there followed in the tree, a
    missing file made, not its directory); like nspawn, a failure is reported with its
    wording and the caller copies instead."""
    try:
        target = intree.canonical(root, where, missing_ok=True)
    except OSError as e:
        _warn(f"Failed to resolve {where} path in container, ignoring: {os.strerror(e.errno)}")
        return True
    try:
        with intree.parent_of(root, target) as path:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644))
    except OSError:
        pass  # there already, or a --read-only tree: the mount below says what is missing
    try:
        with intree.at(root, target) as resolved:
            linux.mount(source, resolved, None, MS_BIND)
    except OSError as e:
        _warn(f"Failed to mount {shown_source} (type n/a) on {intree.host_path(root)}{target} "
              f'(MS_BIND ""): {os.strerror(e.errno)}')
        return False
    intree.remount(root, target, MS_RDONLY | MS_NOSUID | MS_NODEV)
    return True


def _symlink_zone(zone: str, fallback: str) -> EtcStep:
    """Point /etc/localtime at the tree's own copy of the host's zone. A link that already
    names it (as "../usr/share/zoneinfo/Z", or nspawn's other accepted spelling, the absolute
    "/usr/share/zoneinfo/Z") is left as it is; without the zone in the tree the host's file
    is bound in (or copied) instead."""
    return EtcStep("localtime", _link_zone, zone, fallback)


def _link_zone(root: str, etc: int, shown: str, name: str, zone: str, fallback: str) -> None:
    link = f"../usr/share/zoneinfo/{zone}"
    try:
        if os.readlink(name, dir_fd=etc) in (link, f"/usr/share/zoneinfo/{zone}"):
            return
    except OSError:
        pass
    if not intree.exists(root, f"/usr/share/zoneinfo/{zone}"):
        _install(name, fallback, "bind", "/etc/localtime")(root)
        return
    try:
        os.unlink(name, dir_fd=etc)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in _QUIET:
            _warn(f"Failed to remove existing timezone info {shown}/localtime in container, "
                  f"ignoring: {os.strerror(e.errno)}")
        return
    try:
        os.symlink(link, name, dir_fd=etc)
    except OSError as e:
        if e.errno not in _QUIET:
            _warn(f"Failed to correct timezone of container, ignoring: {os.strerror(e.errno)}")
