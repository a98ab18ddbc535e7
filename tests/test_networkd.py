"""systemd-networkd configuring nspawnpy's links from the .network files we ship in units/,
checked inside the systemd test host with the real tools: the host side of --network-veth
(79-nspawnpy-ve.network: a /28 from the pool, DHCP server) and the container side (host0,
79-nspawnpy-host0.network), and a --network-macvlan guest (mv-IF, 79-nspawnpy-mv.network)
leasing its address from dnsmasq on a veth "LAN" inside the test host's own netns.

systemd ships 80-container-{ve,host0}.network too; ours are named 79-… so that they sort
first and networkd picks them for the links nspawnpy makes. The tests assert that it did
("Network File:" of networkctl status) with systemd's files in place.
"""

from __future__ import annotations

import ipaddress
import re
import shutil

import pytest

import rootfs

MACHINES = "/var/lib/machines"
NETWORK_DIR = "etc/systemd/network"
LAN_HOST = "10.213.7.1"          # thB, the dnsmasq side of the "LAN" (test host netns only)
LAN_POOL = ("10.213.7.50", "10.213.7.99")
LEASES = "/run/nspawnpy-test-dnsmasq.leases"




@pytest.fixture(scope="module")
def host(testhost):
    """The test host running systemd-networkd with our units installed; stopped afterwards."""
    testhost.install_units()
    try:
        testhost.run(["systemctl", "start", "systemd-networkd"])
        yield testhost
    finally:
        testhost.run(["systemctl", "stop", "systemd-networkd.socket", "systemd-networkd"],
                     check=False)
        testhost.run(["systemctl", "reset-failed"], check=False)
    links = testhost.run(["ip", "-o", "link", "show"]).stdout
    assert not re.search(r"^\d+: (ve-|mv-|thA|thB)", links, re.M), links


def debian_guest(host, name: str, network_file: str):
    """A Debian tree in /var/lib/machines/NAME with *network_file* from units/ installed and
    systemd-networkd enabled."""
    tree = rootfs.debian_tree(host.root / MACHINES.lstrip("/") / name)
    shutil.copy2(host.repo / "units" / network_file, tree / NETWORK_DIR / network_file)
    host.run(["systemctl", f"--root={MACHINES}/{name}", "enable", "-q", "systemd-networkd"])
    return tree


def in_guest(host, name: str, cmd: str, check=True) -> str:
    return host.run(["systemd-run", "-M", name, "--wait", "--pipe", "-q", "/bin/sh", "-c", cmd],
                    check=check).stdout


def network_file(status: str) -> str:
    m = re.search(r"Network File: (\S+)", status)
    return m.group(1) if m else status


def assert_clean_stop(host, unit: str) -> None:
    host.run(["systemctl", "stop", unit], timeout=60)
    assert host.run(["systemctl", "show", "-P", "Result", unit]).stdout.strip() == "success"


def test_veth_both_ends_configured_by_networkd_from_our_files(host):
    name = "nwve"
    tree = debian_guest(host, name, "79-nspawnpy-host0.network")
    unit = f"nspawnpy@{name}.service"   # passes --network-veth
    try:
        host.run(["systemctl", "start", unit])
        out = host.wait_until(f"systemd-run -M {name} --wait --pipe -q "
                               "ip -4 -o addr show dev host0 scope global | grep -w inet")
        guest_if = ipaddress.ip_interface(re.search(r"inet (\S+)", out).group(1))

        # Host side: ve-NAME got a /28 from the pool, from our file, and leased to the guest.
        status = host.run(["networkctl", "status", f"ve-{name}", "--no-pager"]).stdout
        assert network_file(status) == "/etc/systemd/network/79-nspawnpy-ve.network"
        out = host.run(["ip", "-4", "-o", "addr", "show", "dev", f"ve-{name}",
                        "scope", "global"]).stdout
        host_ifs = [ipaddress.ip_interface(a) for a in re.findall(r"inet (\S+)", out)]
        server = next(i for i in host_ifs if guest_if.ip in i.network)
        assert server.network.prefixlen == 28 and server.ip.is_private
        assert guest_if.network == server.network
        assert re.search(rf"Offered DHCP leases: {re.escape(str(guest_if.ip))}\b", status)

        # Container side: host0 configured by DHCP from our file.
        status = in_guest(host, name, "networkctl status host0 --no-pager")
        assert network_file(status) == "/etc/systemd/network/79-nspawnpy-host0.network"
        assert f"{guest_if.ip} (DHCP4 via {server.ip})" in status

        host.run(["busybox", "ping", "-c", "1", "-W", "3", str(guest_if.ip)])
        assert_clean_stop(host, unit)
    finally:
        host.stop_unit(unit)
        rootfs.rmtree(tree)


def test_macvlan_guest_leases_from_dnsmasq_on_the_lan_with_our_file(host):
    name = "nwmv"
    tree = debian_guest(host, name, "79-nspawnpy-mv.network")
    unit = "nspawnpy-test-nwmv.service"
    dhcp = "nspawnpy-test-dnsmasq.service"
    try:
        host.run(f"ip link add thA type veth peer name thB && ip addr add {LAN_HOST}/24 dev thB"
                 " && ip link set thA up && ip link set thB up")
        host.run(["systemd-run", "-q", f"--unit={dhcp}", "dnsmasq", "--no-daemon", "--no-ping",
                  "--conf-file=/dev/null", "--port=0", "--interface=thB", "--bind-interfaces",
                  f"--dhcp-range={LAN_POOL[0]},{LAN_POOL[1]},255.255.255.0,1h",
                  f"--dhcp-leasefile={LEASES}"])
        host.run(["systemd-run", "-q", f"--unit={unit}", "-p", "Delegate=yes",
                  "-p", "KillMode=mixed", "-p", "Type=notify", "/usr/local/bin/nspawnpy",
                  "--keep-unit", "-q", "-b", "--network-macvlan=thA", "-D", f"{MACHINES}/{name}"])
        out = host.wait_until(f"systemd-run -M {name} --wait --pipe -q "
                               "ip -4 -o addr show dev mv-thA scope global | grep -w inet")
        addr = ipaddress.ip_interface(re.search(r"inet (\S+)", out).group(1))
        lo, hi = map(ipaddress.ip_address, LAN_POOL)
        assert lo <= addr.ip <= hi and addr.network.prefixlen == 24, addr

        status = in_guest(host, name, "networkctl status mv-thA --no-pager")
        assert network_file(status) == "/etc/systemd/network/79-nspawnpy-mv.network"
        assert f"{addr.ip} (DHCP4 via {LAN_HOST})" in status
        assert re.search(r"Kind: macvlan\b", status) and re.search(r"Mode: bridge\b", status)

        mac = in_guest(host, name, "cat /sys/class/net/mv-thA/address").strip()
        leases = host.run(["cat", LEASES]).stdout.split("\n")
        assert any(line.split()[1:4] == [mac, str(addr.ip), name] for line in leases if line), \
            (mac, leases)

        # The LAN side reaches the container through the macvlan on thA.
        host.run(["busybox", "ping", "-c", "1", "-W", "3", str(addr.ip)])
        assert_clean_stop(host, unit)
    finally:
        host.stop_unit(unit)
        host.stop_unit(dhcp)
        host.run(["ip", "link", "del", "thA"], check=False)
        host.run(["rm", "-f", LEASES], check=False)
        rootfs.rmtree(tree)
