"""Container networking: the `Network` that remembers every link, bridge and rule made for
a container (supervisor/links.py makes them, with rtnetlink via pyroute2, imported lazily),
so `teardown()` can undo it — also from a forked copy of the object in the janitor; the
namespace and zone-bridge helpers both use.

The `Network` keeps an fd on the container's network namespace until teardown, so
interfaces moved into it can still be moved back after the payload has exited.
Unlike nspawn, the host ends ve-/vb- and a zone's vz- bridge are brought up here
(nspawn leaves ve- and vz- to networkd).

Runs in: the supervisor (set-up, teardown) and the janitor (teardown); the port watcher is
supervisor/portwatch.py.
"""

import errno
import fcntl
import logging
import os

from nspawnpy.errors import UserError

log = logging.getLogger("nspawnpy.network")

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
RUN_DIR = "/run/nspawnpy"
ZONE_LOCK = RUN_DIR + "/network-zone.lock"
ZONE_MARKERS = RUN_DIR + "/zones"  # one empty file per vz- bridge we created


# ---------------------------------------------------------------------------
# namespaces


def _setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    from .. import linux
    linux.setns(fd, nstype)


def open_netns(path: str) -> int:
    """Open `path` and check that it is a network namespace; returns an O_CLOEXEC fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"Failed to open network namespace {path}: {e.strerror}")
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOTTY, errno.EINVAL):
            raise UserError(f"{path} is not a namespace file")
        raise UserError(f"Failed to check namespace type of {path}: {e.strerror}")
    if nstype != CLONE_NEWNET:
        os.close(fd)
        raise UserError(f"{path} is not a network namespace")
    return fd


def _rtnl(netns_fd=None):
    """An IPRoute socket; with `netns_fd`, bound to that network namespace.

    A netlink socket stays in the namespace it was created in, so the calling
    thread enters the namespace just long enough to create it.
    """
    from pyroute2 import IPRoute
    if netns_fd is None:
        return IPRoute()
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            return IPRoute()
        finally:
            _setns(here)
    finally:
        os.close(here)


def _delete_links_in(netns_fd, links) -> None:
    """Delete (name, ifindex) links, newest first, in a netns (None: ours), if still theirs."""
    from pyroute2.netlink.exceptions import NetlinkError
    rtnl = _rtnl(netns_fd)
    try:
        for name, idx in reversed(links):
            if _link_name(rtnl, idx) == name:
                try:
                    rtnl.link("del", index=idx)
                except NetlinkError as e:
                    if e.code != errno.ENODEV:
                        log.warning("Failed to remove %s: %s", name, _err(e))
    finally:
        rtnl.close()


def _err(e) -> str:
    """The errno text of a netlink error (pyroute2 puts it in .code), else the message."""
    from pyroute2.netlink.exceptions import NetlinkError
    if isinstance(e, NetlinkError) and isinstance(e.code, int) and e.code > 0:
        return os.strerror(e.code)
    return str(e)


def _lookup(ipr, name):
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def _link_name(ipr, index):
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
    except NetlinkError:
        return None


# ---------------------------------------------------------------------------
# the live network


class Network:
    """Everything `setup()` created; `teardown()` undoes it (idempotent)."""

    def __init__(self, plan):
        self.plan = plan
        self.ifindexes = []
        self.host_netns_fd = None
        self.container_netns_fd = None
        self.host_links = []      # [(name, ifindex)] veth ends on the host, deleted on teardown
        self.container_links = [] # [(name, ifindex)] macvlan/ipvlan inside the container
        self.moved = []           # [(original name, host ifindex, name in container, container ifindex)]
        self.zone_bridge = None
        self.port_tag = None      # comment on our DNAT rules (--port=)
        self.port_watcher = None  # (pid, pidfd) of the process that keeps them pointed at the container
        self.torn_down = False

    def __repr__(self):
        return (f"Network(ifindexes={self.ifindexes}, host_links={self.host_links}, "
                f"container_links={self.container_links}, moved={self.moved}, zone={self.zone_bridge})")

    # -- teardown ----------------------------------------------------------

    STATE = ("container_netns_fd", "host_netns_fd", "host_links", "container_links", "moved",
             "zone_bridge", "port_tag", "port_watcher")

    def cleanup(self):
        """The Cleanup that undoes what was made (teardown_links of this state)."""
        from .cleanups import Cleanup
        state = tuple(_frozen(getattr(self, name)) for name in self.STATE)
        fds = (self.container_netns_fd, self.host_netns_fd,
               self.port_watcher[1] if self.port_watcher else None)
        return Cleanup("links", state, tuple(fd for fd in fds if fd is not None))

    def teardown(self) -> None:
        if self.torn_down:
            return
        self.torn_down = True
        try:
            self._unforward_ports()
            self._move_back()
            self._delete_links()
            if self.zone_bridge:
                with _ZoneLock():
                    _remove_bridge_if_empty(self.zone_bridge)
        finally:
            for attr in ("container_netns_fd", "host_netns_fd"):
                fd = getattr(self, attr)
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                    setattr(self, attr, None)

    def _move_back(self):
        if not self.moved:
            return
        from pyroute2.netlink.exceptions import NetlinkError
        inner = _rtnl(self.container_netns_fd) if self.container_netns_fd is not None else None
        host = _rtnl()
        try:
            for orig, host_idx, cname, cidx in reversed(self.moved):
                if inner is not None and _link_name(inner, cidx) == cname:
                    try:
                        inner.link("set", index=cidx, net_ns_fd=self.host_netns_fd, ifname=orig)
                        continue
                    except NetlinkError as e:
                        if e.code != errno.EEXIST:
                            log.warning("Failed to move %s back to the host: %s", cname, _err(e))
                            continue
                    # The original name was taken meanwhile: keep the container's name.
                    try:
                        inner.link("set", index=cidx, net_ns_fd=self.host_netns_fd)
                        log.warning("Interface %s moved back as %s: the name %s is taken", orig, cname, orig)
                    except NetlinkError as e:
                        log.warning("Failed to move %s back to the host: %s", cname, _err(e))
                    continue
                # Not in the container (any more): when its namespace died the kernel moved
                # a physical device back by itself (virtual ones are destroyed with it).
                if _lookup(host, orig) is not None:
                    continue
                for cand in (host_idx, cidx):
                    name = _link_name(host, cand)
                    if name is None or not (name in (orig, cname) or name.startswith("dev")):
                        continue  # an unrelated link that reuses the index
                    try:
                        host.link("set", index=cand, ifname=orig)
                    except NetlinkError as e:
                        log.warning("Failed to rename %s back to %s: %s", name, orig, _err(e))
                    break
        finally:
            host.close()
            if inner is not None:
                inner.close()

    def _delete_links(self):
        if self.container_links and self.container_netns_fd is not None:
            _delete_links_in(self.container_netns_fd, self.container_links)
        if self.host_links:
            _delete_links_in(None, self.host_links)

    def _unforward_ports(self):
        if self.port_watcher:
            from .portwatch import stop
            stop(*self.port_watcher)
            self.port_watcher = None
        if self.port_tag:
            from nspawnpy.supervisor import nftables
            try:
                nftables.unforward(self.port_tag)
            except (nftables.NftError, OSError) as e:
                log.warning("Failed to remove port forwarding rules: %s", e)
            self.port_tag = None


def teardown_links(*state) -> None:
    """Undo a Network from its state (Network.cleanup()'s arguments)."""
    net = Network(None)
    for name, value in zip(Network.STATE, state):
        setattr(net, name, list(value) if isinstance(value, tuple) and name.endswith(("links", "moved"))
                else value)
    net.teardown()


def _frozen(value):
    """Lists (of tuples) as tuples: a Cleanup's arguments are plain, immutable data."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------
# zones


class _ZoneLock:
    """System-wide lock so that checking a zone bridge for members and removing it is atomic."""

    def __enter__(self):
        os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
        self.fd = os.open(ZONE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _bridge_is_empty(name):
    """True if empty, False if it has ports, None if there is no such bridge."""
    try:
        return not os.listdir(f"/sys/class/net/{name}/brif")
    except FileNotFoundError:
        return None


def _remove_bridge_if_empty(name):
    from pyroute2.netlink.exceptions import NetlinkError
    empty = _bridge_is_empty(name)
    if empty:
        with _rtnl() as ipr:
            idx = _lookup(ipr, name)
            if idx is not None:
                try:
                    ipr.link("del", index=idx)
                except NetlinkError as e:
                    if e.code != errno.ENODEV:
                        log.warning("Failed to remove bridge %s: %s", name, _err(e))
    if empty or empty is None:
        try:
            os.unlink(os.path.join(ZONE_MARKERS, name))
        except FileNotFoundError:
            pass


def _remove_stale_zone_bridges():
    """Drop empty vz- bridges a killed nspawnpy created but never removed (lock held)."""
    try:
        names = os.listdir(ZONE_MARKERS)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith("vz-"):
            _remove_bridge_if_empty(name)
