"""Container networking: veth, bridge, zone, macvlan, ipvlan and interface moves.

`NetworkPlan` is pure data built from the settings; `setup(plan, pid)` creates the
kernel objects (rtnetlink via pyroute2, imported lazily) and returns a `Network`
that remembers everything it made, so `teardown()` can undo it — also from a
forked copy of the object in a separate cleanup process.

The `Network` keeps an fd on the container's network namespace until teardown, so
interfaces moved into it can still be moved back after the payload has exited.
Unlike nspawn, the host ends ve-/vb- and a zone's vz- bridge are brought up here
(nspawn leaves ve- and vz- to networkd).

Runs in: the supervisor (set-up, teardown), the janitor (teardown) and the port watcher, a
child in the container's network namespace.
"""

import errno
import fcntl
import logging
import os

from nspawnpy.config import netspec
from nspawnpy.errors import UserError

log = logging.getLogger("nspawnpy.network")

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
RUN_DIR = "/run/nspawnpy"
ZONE_LOCK = RUN_DIR + "/network-zone.lock"
ZONE_MARKERS = RUN_DIR + "/zones"  # one empty file per vz- bridge we created


# ---------------------------------------------------------------------------
# the plan


class NetworkPlan:
    """What the container's network should look like; built from settings, no side effects."""

    def __init__(self, machine):
        self.machine = machine
        self.private_network = False
        self.veth = False
        self.bridge = None        # existing bridge to join (--network-bridge)
        self.zone_bridge = None   # vz-ZONE (--network-zone)
        self.veth_extra = []      # [(host, container)]
        self.interfaces = []      # [(host, container_name)]
        self.macvlan = []         # [(parent, name in container)]
        self.ipvlan = []          # [(parent, name in container)]
        self.netns_path = None
        self.ports = []           # [netspec.Port]

    @property
    def needs_netns(self) -> bool:
        return self.netns_path is None and bool(
            self.private_network or self.veth or self.veth_extra or self.interfaces
            or self.macvlan or self.ipvlan or self.bridge or self.zone_bridge)

    @property
    def host_veth_name(self):
        if not self.veth:
            return None
        return netspec.veth_host_name(self.machine, bridged=bool(self.bridge or self.zone_bridge))

    def container_ifnames(self):
        """Every interface name this plan puts into the container."""
        names = ["host0"] if self.veth else []
        names += [c for _, c in self.veth_extra]
        names += [c for _, c in self.interfaces]
        names += [n for _, n in self.macvlan] + [n for _, n in self.ipvlan]
        return names

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"NetworkPlan({fields})"

    @classmethod
    def from_settings(cls, s, machine: str) -> "NetworkPlan":
        plan = cls(machine)
        plan.private_network = bool(s.private_network)
        plan.veth = bool(s.network_veth)
        bridge, zone = s.network_bridge, s.network_zone
        plan.netns_path = s.network_namespace_path or None

        def bad(what, spec, e):
            return UserError(f"Invalid {what} '{spec}': {e}")

        if bridge:
            try:
                plan.bridge = netspec.check_ifname(bridge)
            except ValueError as e:
                raise bad("--network-bridge=", bridge, e)
        if zone:
            if zone.startswith("vz-"):
                zone = zone[3:]
            try:
                plan.zone_bridge = netspec.zone_bridge_name(zone)
            except ValueError as e:
                raise UserError(f"Invalid --network-zone=: {e}")
        if plan.bridge or plan.zone_bridge:
            plan.veth = True

        for spec in s.network_veth_extra:
            try:
                host, cont = netspec.parse_iface_pair(spec)
            except ValueError as e:
                raise bad("--network-veth-extra=", spec, e)
            plan.veth_extra.append((host, cont or host))
        for spec in s.network_interfaces:
            try:
                host, cont = netspec.parse_iface_pair(spec)
            except ValueError as e:
                raise bad("--network-interface=", spec, e)
            plan.interfaces.append((host, cont or host))
        for specs, option, namer, dest in (
                (s.network_macvlan, "--network-macvlan=", netspec.macvlan_name, plan.macvlan),
                (s.network_ipvlan, "--network-ipvlan=", netspec.ipvlan_name, plan.ipvlan)):
            for spec in specs:
                try:
                    parent, cont = netspec.parse_iface_pair(spec)
                except ValueError as e:
                    raise bad(option, spec, e)
                dest.append((parent, netspec.shorten_ifname(cont) if cont else namer(parent)))

        for spec in s.ports:
            try:
                port = netspec.parse_port(spec)
            except ValueError as e:
                raise bad("--port=", spec, e)
            if any(p.proto == port.proto and p.host_port == port.host_port for p in plan.ports):
                raise UserError(f"Duplicate port specification: {spec}")
            plan.ports.append(port)

        # Names must not collide, neither on the host nor inside the container.
        host_names = [h for h, _ in plan.veth_extra]
        if plan.veth:
            host_names.append(plan.host_veth_name)
        dup = _first_duplicate(host_names)
        if dup:
            raise UserError(f"Network interface name {dup} is used twice on the host side")
        dup = _first_duplicate(plan.container_ifnames())
        if dup:
            raise UserError(f"Network interface name {dup} is used twice inside the container")
        dup = _first_duplicate([h for h, _ in plan.interfaces])
        if dup:
            raise UserError(f"Network interface {dup} is moved into the container twice")

        if plan.ports:
            if not plan.needs_netns:
                raise UserError("--port= requires private networking (e.g. --network-veth)")
            from nspawnpy.supervisor import nftables
            if not nftables.available():
                raise UserError(f"--port= needs nftables (libnftables1): cannot load {nftables.LIBRARY}")
        return plan


def _first_duplicate(items):
    seen = set()
    for i in items:
        if i in seen:
            return i
        seen.add(i)
    return None


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
    code = getattr(e, "code", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
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
            _stop_process(*self.port_watcher)
            self.port_watcher = None
        if self.port_tag:
            from nspawnpy.supervisor import nftables
            try:
                nftables.unforward(self.port_tag)
            except (nftables.NftError, OSError) as e:
                log.warning("Failed to remove port forwarding rules: %s", e)
            self.port_tag = None


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


# ---------------------------------------------------------------------------
# setup


def setup(plan: NetworkPlan, pid: int) -> Network:
    """Create the plan's links for the container whose PID 1 is `pid` (host PID)."""
    from pyroute2.netlink.exceptions import NetlinkError

    net = Network(plan)
    if not plan.needs_netns:
        return net
    try:
        net.container_netns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        net.host_netns_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        net.teardown()
        raise UserError(f"Failed to open network namespace of PID {pid}: {e.strerror}")
    if os.path.samestat(os.fstat(net.container_netns_fd), os.fstat(net.host_netns_fd)):
        net.teardown()
        raise UserError(f"PID {pid} does not have its own network namespace")

    try:
        with _rtnl() as ipr:
            _precheck(plan, ipr)
            _setup_veth(plan, net, ipr)
            _setup_veth_extra(plan, net, ipr)
            _setup_vlans(plan, net, ipr)
            _move_interfaces(plan, net, ipr)
        if plan.ports:
            _start_port_watcher(plan, net, pid)
    except UserError:
        net.teardown()
        raise
    except (NetlinkError, OSError, ValueError) as e:
        net.teardown()
        raise UserError(f"Failed to set up container network: {_err(e)}")
    except BaseException:
        net.teardown()
        raise
    return net


def _precheck(plan, ipr):
    """Refuse before creating anything if a name is taken or a parent is missing."""
    for name in filter(None, [plan.host_veth_name] + [h for h, _ in plan.veth_extra]):
        if _lookup(ipr, name) is not None:
            raise UserError(f"Network interface {name} already exists on the host")
    if plan.bridge:
        idx = _lookup(ipr, plan.bridge)
        if idx is None:
            raise UserError(f"Bridge interface {plan.bridge} does not exist")
        if not os.path.isdir(f"/sys/class/net/{plan.bridge}/bridge"):
            raise UserError(f"Network interface {plan.bridge} is not a bridge")
    if plan.zone_bridge and _lookup(ipr, plan.zone_bridge) is not None \
            and not os.path.isdir(f"/sys/class/net/{plan.zone_bridge}/bridge"):
        raise UserError(f"Network interface {plan.zone_bridge} exists but is not a bridge")
    for what, pairs in (("MACVLAN parent", plan.macvlan), ("IPVLAN parent", plan.ipvlan),
                        ("Network", plan.interfaces)):
        for parent, _ in pairs:
            if _lookup(ipr, parent) is None:
                raise UserError(f"{what} interface {parent} does not exist")


def _add_veth(net, ipr, host, host_mac, cont, cont_mac, altname=None):
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        ipr.link("add", ifname=host, kind="veth", address=host_mac,
                 peer={"ifname": cont, "address": cont_mac, "net_ns_fd": net.container_netns_fd})
    except NetlinkError as e:
        raise UserError(f"Failed to add veth interfaces ({host}:{cont}): {_err(e)}")
    idx = _lookup(ipr, host)
    net.host_links.append((host, idx))
    if altname:
        try:
            ipr.link("property_add", index=idx, altname=altname)
        except NetlinkError as e:
            log.warning("Failed to set alternative name %s on %s, ignoring: %s", altname, host, _err(e))
    return idx


def _setup_veth(plan, net, ipr):
    if not plan.veth:
        return
    from pyroute2.netlink.exceptions import NetlinkError
    m = plan.machine
    try:
        mid = netspec.read_machine_id()
    except ValueError as e:
        raise UserError(f"Failed to generate predictable MAC addresses: {e}")
    name = plan.host_veth_name
    full = ("vb-" if (plan.bridge or plan.zone_bridge) else "ve-") + m
    if name != full:
        log.warning("Network interface name '%s' has been changed to '%s' to fit length constraints.", full, name)
    idx = _add_veth(net, ipr, name, netspec.container_mac(m, netspec.HOST_KEY, 0, mid),
                    "host0", netspec.container_mac(m, netspec.CONTAINER_KEY, 0, mid),
                    altname=full if name != full and len(full) < 128 else None)
    bridge = plan.bridge or plan.zone_bridge
    if not bridge:
        ipr.link("set", index=idx, state="up")
        net.ifindexes.append(idx)
        return
    if plan.zone_bridge:
        with _ZoneLock():
            _remove_stale_zone_bridges()
            br = _lookup(ipr, bridge)
            if br is None:
                try:
                    ipr.link("add", ifname=bridge, kind="bridge")
                except NetlinkError as e:
                    raise UserError(f"Failed to create bridge interface {bridge}: {_err(e)}")
                br = _lookup(ipr, bridge)
                os.makedirs(ZONE_MARKERS, mode=0o755, exist_ok=True)
                open(os.path.join(ZONE_MARKERS, bridge), "w").close()
            net.zone_bridge = bridge
            ipr.link("set", index=br, state="up")
            _join_bridge(ipr, idx, name, br, bridge)
    else:
        br = _lookup(ipr, bridge)
        _join_bridge(ipr, idx, name, br, bridge)
    net.ifindexes.append(br)


def _join_bridge(ipr, idx, name, br, bridge):
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        ipr.link("set", index=idx, master=br, state="up")
    except NetlinkError as e:
        raise UserError(f"Failed to add interface {name} to bridge {bridge}: {_err(e)}")


def _setup_veth_extra(plan, net, ipr):
    if not plan.veth_extra:
        return
    try:
        mid = netspec.read_machine_id()
    except ValueError as e:
        raise UserError(f"Failed to generate predictable MAC addresses: {e}")
    for i, (host, cont) in enumerate(plan.veth_extra):
        _add_veth(net, ipr, host, netspec.container_mac(plan.machine, netspec.VETH_EXTRA_HOST_KEY, i, mid),
                  cont, netspec.container_mac(plan.machine, netspec.VETH_EXTRA_CONTAINER_KEY, i, mid))


def _setup_vlans(plan, net, ipr):
    if not (plan.macvlan or plan.ipvlan):
        return
    from pyroute2.netlink.exceptions import NetlinkError
    inner = _rtnl(net.container_netns_fd)
    try:
        if plan.macvlan:
            try:
                mid = netspec.read_machine_id()
            except ValueError as e:
                raise UserError(f"Failed to create MACVLAN MAC address: {e}")
        for i, (parent, name) in enumerate(plan.macvlan):
            try:
                ipr.link("add", ifname=name, kind="macvlan", link=_lookup(ipr, parent), macvlan_mode="bridge",
                         address=netspec.container_mac(plan.machine, netspec.MACVLAN_KEY, i, mid),
                         net_ns_fd=net.container_netns_fd)
            except NetlinkError as e:
                raise UserError(f"Failed to add macvlan interface {name} on {parent}: {_err(e)}")
            net.container_links.append((name, _lookup(inner, name)))
        for parent, name in plan.ipvlan:
            try:
                ipr.link("add", ifname=name, kind="ipvlan", link=_lookup(ipr, parent), ipvlan_mode=0,
                         net_ns_fd=net.container_netns_fd)
            except NetlinkError as e:
                hint = " (kernel without ipvlan support?)" if e.code == errno.EOPNOTSUPP else ""
                raise UserError(f"Failed to add ipvlan interface {name} on {parent}: {_err(e)}{hint}")
            net.container_links.append((name, _lookup(inner, name)))
    finally:
        inner.close()


def _move_interfaces(plan, net, ipr):
    if not plan.interfaces:
        return
    from pyroute2.netlink.exceptions import NetlinkError
    inner = _rtnl(net.container_netns_fd)
    try:
        for orig, cname in plan.interfaces:
            idx = _lookup(ipr, orig)
            kw = {"ifname": cname} if cname != orig else {}
            try:
                ipr.link("set", index=idx, net_ns_fd=net.container_netns_fd, **kw)
            except NetlinkError as e:
                raise UserError(f"Failed to move interface {orig} into the container: {_err(e)}")
            net.moved.append((orig, idx, cname, _lookup(inner, cname)))
    finally:
        inner.close()


# ---------------------------------------------------------------------------
# --port: DNAT rules that follow the container's IPv4 address
#
# Like nspawn, the rules are added once the container has an address and are
# re-pointed whenever that address changes.  A small helper process forked here
# (only when ports are forwarded) listens for address changes inside the
# container's namespace; the supervisor's loop stays untouched.  It dies with
# the supervisor (PDEATHSIG), and teardown finds the rules by their tag, so a
# forked cleanup process can remove them without the helper.

RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
RT_SCOPE_HOST = 254


def _start_port_watcher(plan, net, pid):
    from nspawnpy.supervisor import nftables
    net.port_tag = nftables.make_tag(plan.machine, pid)
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        status = 1
        try:
            _port_watcher(plan.ports, net.port_tag, net.container_netns_fd, net.host_netns_fd, parent)
            status = 0
        except BaseException as e:  # noqa: BLE001 - a forked child must never return
            log.warning("Port forwarding stopped: %s", e)
        finally:
            os._exit(status)
    net.port_watcher = (child, os.pidfd_open(child))


def _stop_process(pid, pidfd):
    """SIGKILL the helper and wait until it is gone (also works when it is not our child)."""
    import select
    import signal
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    select.select([pidfd], [], [], 5)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    os.close(pidfd)


def _port_watcher(ports, tag, container_netns_fd, host_netns_fd, parent):
    import signal
    from nspawnpy import linux
    from nspawnpy.supervisor import nftables
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    keep = sorted({container_netns_fd, host_netns_fd})
    os.closerange(3, keep[0])
    os.closerange(keep[0] + 1, keep[1])
    os.closerange(keep[-1] + 1, 1 << 20)

    _setns(container_netns_fd)
    events, query = _netlink(RTMGRP_IPV4_IFADDR), _netlink(0)
    _setns(host_netns_fd)  # libnftables must talk to the host's netfilter
    current = None
    while True:
        address = _container_ipv4(query)
        if address != current:
            log.debug("New container IP is %s.", address)
            try:
                if address:
                    nftables.forward(ports, address, tag)
                else:
                    nftables.unforward(tag)
                current = address
            except (nftables.NftError, OSError) as e:
                log.warning("Failed to forward ports to %s: %s", address, e)
        _wait_for_address_change(events)


def _netlink(groups):
    import socket
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    s.bind((0, groups))
    return s


def _wait_for_address_change(sock):
    """Block until an IPv4 address event arrives, then swallow the burst that follows."""
    import select
    try:
        sock.recv(65536)
    except OSError as e:
        if e.errno != errno.ENOBUFS:  # overrun: something changed, re-read everything
            raise
    while select.select([sock], [], [], 0.05)[0]:
        try:
            sock.recv(65536)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise


def _container_ipv4(sock):
    """The address ports are forwarded to: widest scope, lowest ifindex, first listed."""
    import ipaddress
    import socket
    import struct
    seq = int.from_bytes(os.urandom(4), "little")
    req = struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)
    sock.send(struct.pack("=IHHII", 16 + len(req), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + req)
    found = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, kind, _, mseq, _ = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                return None
            body = data[off + 16:off + length]
            off += (length + 3) & ~3
            if mseq != seq:
                continue
            if kind == NLMSG_DONE:
                found.sort()
                return found[0][-1] if found else None
            if kind == NLMSG_ERROR:
                err = -struct.unpack_from("=i", body)[0]
                raise OSError(err, os.strerror(err))
            if kind != RTM_NEWADDR or len(body) < 8:
                continue
            family, _, _, scope, index = struct.unpack_from("=BBBBI", body)
            if family != socket.AF_INET or scope >= RT_SCOPE_HOST:
                continue
            attrs, apos, local = {}, 8, None
            while apos + 4 <= len(body):
                alen, atype = struct.unpack_from("=HH", body, apos)
                if alen < 4:
                    break
                attrs[atype & 0x3FFF] = body[apos + 4:apos + alen]
                apos += (alen + 3) & ~3
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw and len(raw) == 4:
                local = str(ipaddress.IPv4Address(raw))
                if not local.startswith("127."):
                    found.append((scope, index, len(found), local))
