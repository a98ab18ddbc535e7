"""Making the container's links from a NetworkPlan (plan/network.py) once PID 1 exists:
veth pairs (bridged or in a zone), extra veths, macvlan/ipvlan, moved interfaces, and the
port watcher for --port. Everything made is recorded on a network.Network, which undoes it.

Runs in: the supervisor.
"""

import os

from ..config import netspec
from ..errors import UserError
from .network import ZONE_MARKERS, Network, _ZoneLock, _err, _lookup, _remove_stale_zone_bridges, \
    _rtnl, log


def setup(plan, pid: int) -> "Network":
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
            from . import portwatch
            portwatch.start(plan, net, pid)
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
                raise UserError(f"Failed to add new macvlan interfaces: {_err(e)}")  # nspawn's words
            net.container_links.append((name, _lookup(inner, name)))
        for parent, name in plan.ipvlan:
            try:
                ipr.link("add", ifname=name, kind="ipvlan", link=_lookup(ipr, parent), ipvlan_mode=0,
                         net_ns_fd=net.container_netns_fd)
            except NetlinkError as e:
                raise UserError(f"Failed to add new ipvlan interfaces: {_err(e)}")  # nspawn's words
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
