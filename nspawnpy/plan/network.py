"""NetworkPlan: what the container's network should look like (veth, bridge, zone, macvlan,
ipvlan, moved interfaces, forwarded ports), built from the settings with nspawn's naming
rules and checks; pure data, no side effects. supervisor/network.py makes it real.

Runs in: the host side, before clone.
"""

from ..config import netspec
from ..errors import UserError


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
        plan.netns_path = s.network_namespace_path or None
        plan._add_bridge(s.network_bridge, s.network_zone)
        plan._add_interfaces(s)
        plan._add_ports(s.ports)
        plan._check_names()
        return plan

    def _add_bridge(self, bridge, zone) -> None:
        if bridge:
            self.bridge = _parsed("--network-bridge=", bridge, netspec.check_ifname)
        if zone:
            try:
                self.zone_bridge = netspec.zone_bridge_name(zone.removeprefix("vz-"))
            except ValueError as e:
                raise UserError(f"Invalid --network-zone=: {e}")
        if self.bridge or self.zone_bridge:
            self.veth = True

    def _add_interfaces(self, s) -> None:
        for spec in s.network_veth_extra:
            host, cont = _parsed("--network-veth-extra=", spec, netspec.parse_iface_pair)
            self.veth_extra.append((host, cont or host))
        for spec in s.network_interfaces:
            host, cont = _parsed("--network-interface=", spec, netspec.parse_iface_pair)
            self.interfaces.append((host, cont or host))
        for specs, option, namer, dest in (
                (s.network_macvlan, "--network-macvlan=", netspec.macvlan_name, self.macvlan),
                (s.network_ipvlan, "--network-ipvlan=", netspec.ipvlan_name, self.ipvlan)):
            for spec in specs:
                parent, cont = _parsed(option, spec, netspec.parse_iface_pair)
                dest.append((parent, netspec.shorten_ifname(cont) if cont else namer(parent)))

    def _add_ports(self, specs) -> None:
        for spec in specs:
            port = _parsed("--port=", spec, netspec.parse_port)
            if any(p.proto == port.proto and p.host_port == port.host_port for p in self.ports):
                raise UserError(f"Duplicate port specification: {spec}")
            self.ports.append(port)
        if self.ports:
            if not self.needs_netns:
                raise UserError("--port= requires private networking (e.g. --network-veth)")
            from ..supervisor import nftables
            if not nftables.available():
                raise UserError("--port= needs nftables (libnftables1): "
                                f"cannot load {nftables.LIBRARY}")

    def _check_names(self) -> None:
        """Names must not collide, neither on the host nor inside the container."""
        host_names = [h for h, _ in self.veth_extra]
        if self.veth:
            host_names.append(self.host_veth_name)
        for names, message in (
                (host_names, "Network interface name {} is used twice on the host side"),
                (self.container_ifnames(),
                 "Network interface name {} is used twice inside the container"),
                ([h for h, _ in self.interfaces],
                 "Network interface {} is moved into the container twice")):
            dup = _first_duplicate(names)
            if dup:
                raise UserError(message.format(dup))


def _parsed(option: str, spec: str, parse):
    try:
        return parse(spec)
    except ValueError as e:
        raise UserError(f"Invalid {option} '{spec}': {e}")


def _first_duplicate(items):
    seen = set()
    for i in items:
        if i in seen:
            return i
        seen.add(i)
    return None
