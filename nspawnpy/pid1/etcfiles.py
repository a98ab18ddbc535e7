"""--resolv-conf= and --timezone=: how /etc/resolv.conf and /etc/localtime get
into the container. Each returns a step run by PID 1 on the unpivoted tree.

Runs in: PID 1, before pivot_root (the steps); the host side picks the step.
"""

import os

from .. import linux
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
        return _delete("/etc/resolv.conf")
    how, _, what = mode.partition("-")
    source = _host_resolv_source(what)
    if not os.path.exists(source):
        return None
    return _install("/etc/resolv.conf", source, how, shown_source=source)


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
        return _delete("/etc/localtime")
    if mode == "symlink":
        if not link or "zoneinfo/" not in link:
            return None
        zone = link.split("zoneinfo/", 1)[1]
        return _symlink_zone(zone, os.path.realpath(host))
    if not os.path.exists(host):
        return None
    return _install("/etc/localtime", os.path.realpath(host), mode, shown_source=host)


def _host_path(root: str) -> str:
    """The tree's host path, for messages (under -U PID 1 reaches it as /proc/self/fd/N)."""
    return os.readlink(root) if root.startswith("/proc/self/fd/") else root


def _warn(message: str) -> None:
    os.write(2, (message + "\n").encode(errors="replace"))


def _delete(where: str):
    def step(root: str) -> None:
        try:
            os.unlink(root + where)
        except FileNotFoundError:
            pass
        except OSError as e:  # a --read-only tree: nspawn says so and goes on
            _warn(f"Failed to remove '{_host_path(root)}{where}', ignoring: {os.strerror(e.errno)}")
    return step


def _bind(root: str, where: str, shown_source: str, source: str) -> None:
    """Bind a host file read-only over `where`; like nspawn, a failure is reported
    (with nspawn's wording) and the container starts anyway."""
    from . import mounts
    target = root + where
    try:
        mounts.make_mount_point(target, False)
    except OSError:
        pass  # a --read-only tree: the mount below says what is missing
    try:
        linux.mount(source, target, None, MS_BIND)
    except OSError as e:
        _warn(f"Failed to mount {shown_source} (type n/a) on {_host_path(root)}{where} "
              f'(MS_BIND ""): {os.strerror(e.errno)}')
        return
    mounts.bind_remount(target, MS_RDONLY | MS_NOSUID | MS_NODEV)


def _install(where: str, source: str, how: str, shown_source: str):
    """copy: write the host's content; replace: also over a symlink; bind: read-only bind.
    A --read-only tree keeps its own files (the writes fail, silently as in nspawn)."""
    data = times = None
    if how != "bind":
        with open(source, "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
            times = (st.st_atime_ns, st.st_mtime_ns)  # a copy keeps the host file's times

    def step(root: str) -> None:
        from . import mounts
        target = root + where
        if not os.path.isdir(root + "/etc"):
            return
        if how == "bind":
            if not os.path.islink(target):
                _bind(root, where, shown_source, source)
            return
        try:
            if os.path.islink(target):
                if how != "replace":
                    return
                os.unlink(target)
            mounts.write_file(target, data)
            os.utime(target, ns=times, follow_symlinks=False)
        except OSError:
            pass  # read-only tree: leave the image's own file
    return step


def _symlink_zone(zone: str, fallback: str):
    """Point /etc/localtime at the tree's own copy of the host's zone. A link that already
    names it (as "../usr/share/zoneinfo/Z", or nspawn's other accepted spelling, the absolute
    "/usr/share/zoneinfo/Z") is left as it is; without the zone in the tree the host's file
    is bound in instead."""
    def step(root: str) -> None:
        target = root + "/etc/localtime"
        if os.path.exists(f"{root}/usr/share/zoneinfo/{zone}"):
            try:
                if os.readlink(target) in (f"../usr/share/zoneinfo/{zone}",
                                           f"/usr/share/zoneinfo/{zone}"):
                    return
            except OSError:
                pass
            try:
                if os.path.lexists(target):
                    os.unlink(target)
                os.symlink(f"../usr/share/zoneinfo/{zone}", target)
            except OSError:
                pass  # a --read-only tree keeps what it has
            return
        if os.path.isdir(root + "/etc") and not os.path.islink(target):
            _bind(root, "/etc/localtime", "/etc/localtime", fallback)
    return step
