"""Network layer: naming, MACs, and real kernel links against stand-in containers.

A "container" here is `unshare -n sleep`: a process in a fresh network namespace.
A "LAN" is another such namespace holding one end of a veth pair whose other end
stays on the host as the parent for macvlan/ipvlan.  Everything is checked with
`ip` / `nsenter` from the outside.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from nspawnpy.config import netspec
from nspawnpy.config.settings import Settings
from nspawnpy.errors import UserError
from nspawnpy.config.siphash import siphash24
from nspawnpy.config.ini import read_unit_file

from conftest import stop, wait_for

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root for network namespaces")

# Values observed from the real systemd-nspawn 252 on a host with this machine ID.
REF_MACHINE_ID = bytes.fromhex("3d1219c7c4c5404aaa1f6d2a48adfda4")


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True, **kw)


def links(ns_pid=None):
    pre = f"nsenter -t {ns_pid} -n " if ns_pid else ""
    return sh(pre + "ip -o link").stdout


def link_names(ns_pid=None):
    return {line.split(":")[1].strip().split("@")[0] for line in links(ns_pid).splitlines()}


def link_info(name, ns_pid=None):
    pre = f"nsenter -t {ns_pid} -n " if ns_pid else ""
    out = sh(pre + f"ip -o link show dev {name}").stdout
    return out


def mac_of(name, ns_pid=None):
    out = link_info(name, ns_pid)
    return out.split("link/ether ")[1].split()[0]


def settings(machine, **kw):
    """Settings as the command line leaves them, with `kw` set (raw option values)."""
    s = Settings()
    s.machine = machine
    for dest, value in kw.items():
        setattr(s, dest, value)
    return s


def spawn_netns():
    """A process in its own network namespace; returns the Popen."""
    p = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    mine = os.stat("/proc/self/ns/net").st_ino
    for _ in range(200):
        try:
            if os.stat(f"/proc/{p.pid}/ns/net").st_ino != mine and \
                    os.readlink(f"/proc/{p.pid}/exe").endswith("sleep"):
                return p
        except OSError:
            pass
        time.sleep(0.01)
    p.kill()
    raise RuntimeError("stand-in container did not get its own netns")


@pytest.fixture
def container():
    p = spawn_netns()
    yield p.pid
    stop(p)


@pytest.fixture
def container2():
    p = spawn_netns()
    yield p.pid
    stop(p)


@pytest.fixture
def lan(request):
    """A veth pair: `parent` on the host (up), its peer `lanif` inside a LAN netns (pid)."""
    name = "tlan%d" % (os.getpid() % 1000)
    p = spawn_netns()
    sh(f"ip link add {name} type veth peer name {name}p")
    sh(f"ip link set {name}p netns {p.pid}")
    sh(f"ip link set {name} up")
    sh(f"nsenter -t {p.pid} -n ip link set lo up")
    sh(f"nsenter -t {p.pid} -n ip link set {name}p up")
    yield types.SimpleNamespace(parent=name, lanif=name + "p", pid=p.pid)
    stop(p)
    sh(f"ip link del {name}", check=False)


def netns_setup(plan, pid):
    from nspawnpy.supervisor import links
    return links.setup(plan, pid)


def plan_of(s):
    from nspawnpy.plan.network import NetworkPlan
    return NetworkPlan.from_settings(s, s.machine)


OUR_PREFIXES = ("ve-t", "vb-t", "vz-t", "mv-tlan", "iv-tlan", "tx")


def assert_no_leftovers():
    left = [n for n in link_names() if n.startswith(OUR_PREFIXES)]
    assert left == []


# ---------------------------------------------------------------------------
# siphash / names / MACs (pure)


def test_siphash24_matches_the_reference_vectors():
    key = bytes(range(16))
    assert siphash24(b"", key) == 0x726FDB47DD0E0E31
    assert siphash24(bytes(range(15)), key) == 0xA129CA6149BE45E5
    assert siphash24(bytes(range(8)), key) == 0x93F5F5799A932462


def test_port_specs_parse_with_tcp_default_and_same_container_port():
    assert netspec.parse_port("80") == netspec.Port("tcp", 80, 80)
    assert netspec.parse_port("udp:53") == netspec.Port("udp", 53, 53)
    assert netspec.parse_port("tcp:8080:80") == netspec.Port("tcp", 8080, 80)
    assert netspec.parse_port("8080:80") == netspec.Port("tcp", 8080, 80)


@pytest.mark.parametrize("bad", ["", "0", "65536", "x", "tcp:", "sctp:80", "80:", "1:2:3", "udp:-1", "８０"])
def test_bad_port_specs_are_rejected_with_a_reason(bad):
    with pytest.raises(ValueError, match=r"port"):
        netspec.parse_port(bad)


@pytest.mark.parametrize("good", ["eth0", "a", "x" * 15, "ve-foo.1", "0eth"])
def test_valid_interface_names_are_accepted(good):
    assert netspec.check_ifname(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 16, "a/b", "a:b", "a b", ".", "..", "123", "tab\t", "é"])
def test_invalid_interface_names_are_rejected(bad):
    with pytest.raises(ValueError):
        netspec.check_ifname(bad)


def test_interface_pairs_parse_with_optional_container_name():
    assert netspec.parse_iface_pair("eth0") == ("eth0", None)
    assert netspec.parse_iface_pair("eth0:lan") == ("eth0", "lan")
    for bad in ("eth0:", ":x", "a:b:c", "x" * 16):
        with pytest.raises(ValueError):
            netspec.parse_iface_pair(bad)


def test_long_names_are_shortened_like_nspawn_252():
    # observed: systemd-nspawn 252 -M averyverylongmachinename --network-veth
    assert netspec.veth_host_name("averyverylongmachinename") == "ve-averyverQy2u"
    assert netspec.shorten_ifname("ve-averyverylongmachinename", long_hash=False) == "ve-averyverylon"
    assert netspec.veth_host_name("web", bridged=True) == "vb-web"
    assert netspec.veth_host_name("exactly12chr") == "ve-exactly12chr"
    assert len(netspec.macvlan_name("enp0s31f6verylong")) == 15
    assert netspec.ipvlan_name("eth0") == "iv-eth0"


def test_old_naming_scheme_from_environment_truncates(monkeypatch):
    monkeypatch.setenv("NET_NAMING_SCHEME", "v249")
    if "net.naming-scheme=" in Path("/proc/cmdline").read_text():
        pytest.skip("kernel command line sets a naming scheme")
    assert netspec.veth_host_name("averyverylongmachinename") == "ve-averyverylon"
    monkeypatch.setenv("NET_NAMING_SCHEME", "v252")
    assert netspec.veth_host_name("averyverylongmachinename") == "ve-averyverQy2u"


def test_zone_bridge_name_must_fit_in_an_ifname():
    assert netspec.zone_bridge_name("web") == "vz-web"
    assert netspec.zone_bridge_name("x" * 12) == "vz-" + "x" * 12
    with pytest.raises(ValueError, match="zone"):
        netspec.zone_bridge_name("x" * 13)


def test_macs_match_what_nspawn_252_generated_for_a_known_machine_id():
    mid = REF_MACHINE_ID
    mac = netspec.container_mac
    assert mac("bb1", netspec.CONTAINER_KEY, host_machine_id=mid) == "8e:0b:61:17:f9:66"
    n = "averyverylongmachinename"
    assert mac(n, netspec.CONTAINER_KEY, host_machine_id=mid) == "5a:73:94:1e:34:db"
    assert mac(n, netspec.HOST_KEY, host_machine_id=mid) == "32:e0:1c:a2:93:67"
    assert mac(n, netspec.VETH_EXTRA_HOST_KEY, 0, mid) == "a6:2e:40:d0:26:99"
    assert mac(n, netspec.VETH_EXTRA_CONTAINER_KEY, 0, mid) == "86:e0:8f:5d:4c:b3"
    assert mac(n, netspec.VETH_EXTRA_HOST_KEY, 1, mid) == "42:08:90:d2:fb:f4"
    assert mac(n, netspec.VETH_EXTRA_CONTAINER_KEY, 1, mid) == "be:ac:f5:e6:ab:b2"
    # first macvlan uses index 0 (no index bytes), the second index 1
    assert mac("mvtest", netspec.MACVLAN_KEY, 0, mid) == "7a:3f:69:a8:96:49"
    assert mac("mvtest", netspec.MACVLAN_KEY, 1, mid) == "1e:3a:bd:58:bd:ac"


def test_generated_macs_are_unicast_and_locally_administered():
    for name in ("a", "b", "container-42"):
        first = int(netspec.container_mac(name, netspec.HOST_KEY, host_machine_id=REF_MACHINE_ID)[:2], 16)
        assert first & 1 == 0 and first & 2 == 2


def test_empty_machine_id_is_refused(tmp_path):
    f = tmp_path / "machine-id"
    f.write_text("")
    with pytest.raises(ValueError, match="empty"):
        netspec.read_machine_id(str(f))
    f.write_text("uninitialized\n")
    with pytest.raises(ValueError, match="uninitialized"):
        netspec.read_machine_id(str(f))


def test_netspec_stays_light():
    code = ("import sys; import nspawnpy.config.netspec; "
            "bad = [m for m in ('pyroute2', 're', 'ctypes') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


# ---------------------------------------------------------------------------
# the plan


def test_plan_without_network_options_needs_no_netns():
    assert not plan_of(settings("t")).needs_netns


@pytest.mark.parametrize("kw", [dict(private_network=True), dict(network_veth=True),
                                dict(network_macvlan=["eth0"]), dict(network_zone="z"),
                                dict(network_bridge="br0"), dict(network_interfaces=["eth1"]),
                                dict(network_veth_extra=["a:b"]), dict(network_ipvlan=["eth0"])])
def test_every_network_option_implies_a_private_netns(kw):
    assert plan_of(settings("t", **kw)).needs_netns


def test_bridge_and_zone_imply_veth_with_vb_name():
    p = plan_of(settings("web", network_zone="dmz"))
    assert p.veth and p.zone_bridge == "vz-dmz" and p.host_veth_name == "vb-web"


@pytest.mark.parametrize("kw, msg", [
    (dict(network_zone="x" * 13), "zone"),
    (dict(ports=["99999"]), "port"),
    (dict(ports=["80", "tcp:80:8080"], network_veth=True), "Duplicate"),
    (dict(network_macvlan=["bad/name"]), "macvlan"),
    (dict(network_veth_extra=["a" * 16]), "veth-extra"),
    (dict(network_veth=True, network_veth_extra=["x:host0"]), "twice inside"),
    (dict(network_macvlan=["eth0", "eth0"]), "twice inside"),
])
def test_bad_network_settings_are_user_errors(kw, msg):
    with pytest.raises(UserError, match=msg) as e:
        plan_of(settings("t", **kw))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# real links


@needs_root
def test_veth_pair_has_stable_names_macs_and_carries_traffic(container):
    net = netns_setup(plan_of(settings("tveth1", network_veth=True)), container)
    try:
        assert "ve-tveth1" in link_names()
        assert "host0" in link_names(container)
        assert mac_of("ve-tveth1") == netspec.container_mac("tveth1", netspec.HOST_KEY)
        assert mac_of("host0", container) == netspec.container_mac("tveth1", netspec.CONTAINER_KEY)
        assert ",UP" in link_info("ve-tveth1").split(">")[0] or "<UP" in link_info("ve-tveth1")
        assert net.ifindexes == [int(Path("/sys/class/net/ve-tveth1/ifindex").read_text())]
        sh("ip addr add 10.231.7.1/30 dev ve-tveth1")
        sh(f"nsenter -t {container} -n sh -c 'ip link set lo up; ip link set host0 up; "
           f"ip addr add 10.231.7.2/30 dev host0'")
        sh("busybox ping -c 1 -W 3 10.231.7.2")
    finally:
        net.teardown()
    assert "ve-tveth1" not in link_names()
    assert "host0" not in link_names(container)
    net.teardown()  # idempotent


@needs_root
def test_veth_extra_pairs_get_their_own_macs(container):
    net = netns_setup(plan_of(settings("tvx", network_veth_extra=["txa:ca", "txb"])), container)
    try:
        assert {"ca", "txb"} <= link_names(container)
        assert mac_of("txa") == netspec.container_mac("tvx", netspec.VETH_EXTRA_HOST_KEY, 0)
        assert mac_of("ca", container) == netspec.container_mac("tvx", netspec.VETH_EXTRA_CONTAINER_KEY, 0)
        assert mac_of("txb", container) == netspec.container_mac("tvx", netspec.VETH_EXTRA_CONTAINER_KEY, 1)
    finally:
        net.teardown()
    assert not {"txa", "txb"} & link_names()


@needs_root
def test_bridge_mode_joins_an_existing_bridge_and_leaves_it(container):
    sh("ip link add tbr0 type bridge")
    try:
        net = netns_setup(plan_of(settings("tbr", network_bridge="tbr0")), container)
        try:
            assert os.path.exists("/sys/class/net/tbr0/brif/vb-tbr")
            assert net.ifindexes == [int(Path("/sys/class/net/tbr0/ifindex").read_text())]
            assert "UP" in link_info("vb-tbr").split(">")[0]
        finally:
            net.teardown()
        assert "vb-tbr" not in link_names() and "tbr0" in link_names()
    finally:
        sh("ip link del tbr0")


@needs_root
def test_missing_bridge_is_a_user_error_and_leaves_nothing(container):
    with pytest.raises(UserError, match="tnobr"):
        netns_setup(plan_of(settings("tbr", network_bridge="tnobr")), container)
    assert_no_leftovers()


@needs_root
def test_zone_bridge_is_created_shared_and_removed_with_its_last_member(container, container2):
    a = netns_setup(plan_of(settings("tza", network_zone="tzone")), container)
    try:
        b = netns_setup(plan_of(settings("tzb", network_zone="tzone")), container2)
        assert sorted(os.listdir("/sys/class/net/vz-tzone/brif")) == ["vb-tza", "vb-tzb"]
        assert a.ifindexes == b.ifindexes == [int(Path("/sys/class/net/vz-tzone/ifindex").read_text())]
        b.teardown()
        assert os.listdir("/sys/class/net/vz-tzone/brif") == ["vb-tza"]
    finally:
        a.teardown()
    assert "vz-tzone" not in link_names()
    assert_no_leftovers()


@needs_root
def test_stale_zone_bridge_of_a_killed_instance_is_removed_by_the_next_zone_setup(container, container2):
    # A supervisor joins a zone and is SIGKILLed together with its container.
    pid = os.fork()
    if pid == 0:
        try:
            netns_setup(plan_of(settings("tzk", network_zone="tstale")), container)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert "vz-tstale" in link_names()
    subprocess.run(["kill", "-9", str(container)])
    for _ in range(100):
        if "vb-tzk" not in link_names():
            break
        time.sleep(0.05)
    assert "vb-tzk" not in link_names() and "vz-tstale" in link_names()
    net = netns_setup(plan_of(settings("tzn", network_zone="tfresh")), container2)
    try:
        assert "vz-tstale" not in link_names()
    finally:
        net.teardown()
    assert_no_leftovers()


def teardown_in_forked_process(net) -> None:
    """What the janitor does after a SIGKILLed supervisor: teardown() in a forked copy."""
    pid = os.fork()
    if pid == 0:
        try:
            net.teardown()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


@needs_root
def test_teardown_works_from_a_forked_cleanup_process(container):
    sh("ip link add tmv0 type veth peer name tmv0p")
    try:
        net = netns_setup(plan_of(settings("tfork", network_zone="tfz", network_veth_extra=["txf"],
                                            network_interfaces=["tmv0"])), container)
        teardown_in_forked_process(net)
        names = link_names()
        assert not {"vb-tfork", "vz-tfz", "txf"} & names
        assert "tmv0" in names
    finally:
        sh("ip link del tmv0", check=False)


@needs_root
def test_existing_host_link_name_is_a_clash_and_nothing_is_created(container):
    sh("ip link add ve-tclash type veth peer name tclashp")
    try:
        with pytest.raises(UserError, match="ve-tclash already exists"):
            netns_setup(plan_of(settings("tclash", network_veth=True, network_veth_extra=["txc"])), container)
        assert "txc" not in link_names()
        assert link_names(container) == {"lo"}
    finally:
        sh("ip link del ve-tclash")


@needs_root
def test_failure_halfway_rolls_back_what_was_created(container):
    # the extra pair's container name clashes with lo, after ve- was already made
    with pytest.raises(UserError, match="txr"):
        netns_setup(plan_of(settings("troll", network_veth=True, network_veth_extra=["txr:lo"])), container)
    assert "ve-troll" not in link_names()
    assert link_names(container) == {"lo"}


@needs_root
def test_missing_macvlan_parent_is_a_user_error(container):
    with pytest.raises(UserError, match="tnosuch0 does not exist"):
        netns_setup(plan_of(settings("tmiss", network_veth=True, network_macvlan=["tnosuch0"])), container)
    assert_no_leftovers()
    assert link_names(container) == {"lo"}


@needs_root
def test_missing_interface_to_move_is_a_user_error(container):
    with pytest.raises(UserError, match="tnosuch1 does not exist"):
        netns_setup(plan_of(settings("tmiss", network_interfaces=["tnosuch1"])), container)


UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip link set "$interface" up; ip -4 addr flush dev "$interface" ;;
  bound|renew) ip addr add "$ip/${mask:-$subnet}" dev "$interface" ;;
esac
exit 0
"""


@needs_root
@pytest.mark.skipif(not (shutil.which("dnsmasq") and shutil.which("busybox")), reason="needs dnsmasq and busybox")
def test_macvlan_gets_a_dhcp_lease_for_its_stable_mac(container, lan, tmp_path):
    sh(f"nsenter -t {lan.pid} -n ip addr add 10.232.9.1/24 dev {lan.lanif}")
    leases = tmp_path / "leases"
    dnsmasq = subprocess.Popen(
        ["nsenter", "-t", str(lan.pid), "-n", "dnsmasq", "--no-daemon", "--no-ping", "--port=0",
         "--conf-file=/dev/null", f"--interface={lan.lanif}", "--bind-interfaces",
         "--dhcp-range=10.232.9.50,10.232.9.60,1h", f"--dhcp-leasefile={leases}", "--pid-file="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    script = tmp_path / "udhcpc.script"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    net = netns_setup(plan_of(settings("tmvlan", network_macvlan=[lan.parent])), container)
    try:
        mv = "mv-" + lan.parent
        mac = netspec.container_mac("tmvlan", netspec.MACVLAN_KEY, 0)
        assert mac_of(mv, container) == mac
        assert "macvlan mode bridge" in sh(f"nsenter -t {container} -n ip -d link show dev {mv}").stdout
        time.sleep(0.3)  # dnsmasq binding
        sh(f"nsenter -t {container} -n busybox udhcpc -f -n -q -t 5 -T 1 -i {mv} -s {script}", timeout=30)
        addr = sh(f"nsenter -t {container} -n ip -4 -o addr show dev {mv}").stdout
        assert "10.232.9." in addr
        ip = addr.split("inet ")[1].split("/")[0]
        assert mac in leases.read_text() and ip in leases.read_text()
        sh(f"nsenter -t {lan.pid} -n busybox ping -c 1 -W 3 {ip}")
    finally:
        net.teardown()
        dnsmasq.terminate()
        dnsmasq.wait()
    assert "mv-" + lan.parent not in link_names(container)


@needs_root
def test_ipvlan_l2_carries_traffic_to_the_lan(container, lan):
    from nspawnpy.supervisor import links as network
    try:
        net = network.setup(plan_of(settings("tipv", network_ipvlan=[lan.parent])), container)
    except UserError as e:
        if "not supported" in str(e):
            pytest.skip(f"kernel lacks ipvlan: {e}")
        raise
    try:
        iv = "iv-" + lan.parent
        assert mac_of(iv, container) == mac_of(lan.parent)
        assert "ipvlan" in sh(f"nsenter -t {container} -n ip -d link show dev {iv}").stdout
        sh(f"nsenter -t {lan.pid} -n ip addr add 10.233.9.1/24 dev {lan.lanif}")
        sh(f"nsenter -t {container} -n sh -c 'ip link set {iv} up; ip addr add 10.233.9.2/24 dev {iv}'")
        sh(f"nsenter -t {container} -n busybox ping -c 1 -W 3 10.233.9.1")
    finally:
        net.teardown()


@needs_root
def test_moved_interface_is_renamed_inside_and_returns_with_its_name(container):
    sh("ip link add tmove0 type veth peer name tmove0p")
    try:
        net = netns_setup(plan_of(settings("tmove", network_interfaces=["tmove0:inner0"])), container)
        try:
            assert "tmove0" not in link_names()
            assert "inner0" in link_names(container)
        finally:
            net.teardown()
        assert "tmove0" in link_names()
        assert "inner0" not in link_names(container)
    finally:
        sh("ip link del tmove0", check=False)


@needs_root
def test_moved_interface_returns_even_after_the_container_died():
    p = spawn_netns()
    sh("ip link add tmove1 type veth peer name tmove1p")
    try:
        net = netns_setup(plan_of(settings("tmove", network_interfaces=["tmove1"])), p.pid)
        stop(p)  # the Network object still holds the namespace
        net.teardown()
        assert "tmove1" in link_names()
    finally:
        stop(p)
        sh("ip link del tmove1", check=False)


@needs_root
def test_open_netns_accepts_only_network_namespaces(container, tmp_path):
    from nspawnpy.supervisor.network import open_netns
    fd = open_netns(f"/proc/{container}/ns/net")
    os.close(fd)
    with pytest.raises(UserError, match="not a network namespace"):
        open_netns("/proc/self/ns/mnt")
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="not a namespace"):
        open_netns(str(tmp_path / "f"))
    with pytest.raises(UserError, match="No such file"):
        open_netns(str(tmp_path / "missing"))


@needs_root
def test_setup_refuses_a_pid_sharing_the_host_netns():
    with pytest.raises(UserError, match="own network namespace"):
        netns_setup(plan_of(settings("tself", network_veth=True)), os.getpid())
    assert_no_leftovers()


@needs_root
def test_no_test_links_are_left_behind():
    assert_no_leftovers()


# ---------------------------------------------------------------------------
# shipped files


def read_ini(path):
    """{section: {key: value}} through our own systemd INI reader (last assignment wins)."""
    sections: dict = {}
    for a in read_unit_file(str(path)):
        sections.setdefault(a.section, {})[a.key] = a.value
    return sections


NSPAWN_FILES = {  # ours -> what systemd 252 ships (§6)
    "79-nspawnpy-host0.network": ("80-container-host0.network",
                                  {"Match": {"Virtualization": "container", "Name": "host0"},
                                   "Network": {"DHCP": "yes", "LinkLocalAddressing": "yes", "LLDP": "yes",
                                               "EmitLLDP": "customer-bridge"},
                                   "DHCP": {"UseTimezone": "yes"}}),
    "79-nspawnpy-ve.network": ("80-container-ve.network",
                               {"Match": {"Name": "ve-*", "Driver": "veth"},
                                "Network": {"Address": "0.0.0.0/28", "LinkLocalAddressing": "yes",
                                            "DHCPServer": "yes", "IPMasquerade": "both", "LLDP": "yes",
                                            "EmitLLDP": "customer-bridge", "IPv6SendRA": "yes"}}),
    "79-nspawnpy-vz.network": ("80-container-vz.network",
                               {"Match": {"Name": "vz-*", "Driver": "bridge"},
                                "Network": {"Address": "0.0.0.0/24", "LinkLocalAddressing": "yes",
                                            "DHCPServer": "yes", "IPMasquerade": "both", "LLDP": "yes",
                                            "EmitLLDP": "customer-bridge", "IPv6SendRA": "yes"}}),
    "79-nspawnpy-vb.network": ("80-container-vb.network",
                               {"Match": {"Name": "vb-*", "Driver": "veth"},
                                "Network": {"KeepMaster": "yes", "LinkLocalAddressing": "no", "LLDP": "yes",
                                            "EmitLLDP": "nearest-bridge"}}),
}


@pytest.mark.parametrize("ours", sorted(NSPAWN_FILES))
def test_shipped_network_files_set_what_nspawn_252_sets(ours):
    theirs, expected = NSPAWN_FILES[ours]
    got = read_ini(REPO / "units" / ours)
    assert got == expected
    system = Path("/usr/lib/systemd/network") / theirs
    if system.exists():
        assert got == read_ini(system)


def test_macvlan_network_file_matches_mv_links_with_dhcp():
    got = read_ini(REPO / "units" / "79-nspawnpy-mv.network")
    assert "mv-*" in got["Match"]["Name"].split() and got["Network"]["DHCP"] == "yes"


def test_example_nspawn_files_parse_into_valid_plans():
    files = sorted((REPO / "nspawn-files").glob("*.nspawn"))
    assert {"macvlan.nspawn", "ipvlan.nspawn", "veth.nspawn", "bridge.nspawn", "zone.nspawn",
            "interface.nspawn", "veth-extra.nspawn"} <= {f.name for f in files}
    assert read_ini(REPO / "nspawn-files" / "macvlan.nspawn") == {"Network": {"MACVLAN": "eth0"}}
    keymap = {"Private": "private_network", "VirtualEthernet": "network_veth", "Bridge": "network_bridge",
              "Zone": "network_zone", "MACVLAN": "network_macvlan", "IPVLAN": "network_ipvlan",
              "Interface": "network_interfaces", "VirtualEthernetExtra": "network_veth_extra",
              "Port": "ports"}
    for f in files:
        net = read_ini(f)["Network"]
        kw = {}
        for k, v in net.items():
            dest = keymap[k]
            kw[dest] = v == "yes" if dest in ("private_network", "network_veth") else (
                v.split() if dest.endswith(("s", "vlan", "extra")) else v)
        assert plan_of(settings("x", **kw)).needs_netns, f


# ---------------------------------------------------------------------------
# end to end




@needs_root
def test_launcher_creates_host0_with_the_stable_mac(busybox_root):
    root = busybox_root
    out = subprocess.run([sys.executable, "-m", "nspawnpy", "--register=no", "--keep-unit", "-q", "-D", str(root),
                          "--network-veth", "-M", "te2e", "/bin/sh", "-c", "cat /sys/class/net/host0/address"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == netspec.container_mac("te2e", netspec.CONTAINER_KEY)
    assert "ve-te2e" not in link_names()


# ---------------------------------------------------------------------------
# --port: DNAT through libnftables

NAT_TABLE = "io.nspawnpy.nat"


def nat_rules(ns_pid=None):
    """Our DNAT rules as text lines ("" lines dropped); [] when the table does not exist."""
    pre = f"nsenter -t {ns_pid} -n " if ns_pid else ""
    r = sh(pre + f"nft list table ip {NAT_TABLE}", check=False)
    return [line.strip() for line in r.stdout.splitlines() if "dnat" in line] if r.returncode == 0 else []


def our_nft_tables(ns_pid=None):
    pre = f"nsenter -t {ns_pid} -n " if ns_pid else ""
    return [t for t in sh(pre + "nft list tables").stdout.splitlines() if "nspawnpy" in t]




def test_ports_with_a_private_network_make_a_valid_plan():
    plan = plan_of(settings("x", network_veth=True, ports=["tcp:8080:80", "udp:53"]))
    assert plan.ports == [netspec.Port("tcp", 8080, 80), netspec.Port("udp", 53, 53)]


def test_port_rules_dnat_host_local_traffic_and_skip_loopback_in_output():
    from nspawnpy.supervisor import nftables
    cmds = nftables.rule_commands([netspec.Port("udp", 53, 5353)], "10.1.2.3", "nspawnpy:m:7")
    assert len(cmds) == 2
    pre, out = cmds
    assert " prerouting " in pre and " output " in out
    for c in cmds:
        assert "fib daddr type local udp dport 53 dnat to 10.1.2.3:5353" in c
        assert c.endswith('comment "nspawnpy:m:7"')
    assert "ip daddr != 127.0.0.0/8" in out and "127.0.0.0" not in pre


def test_missing_libnftables_is_one_clear_error_before_anything_is_created(monkeypatch):
    from nspawnpy.supervisor import nftables
    monkeypatch.setattr(nftables, "LIBRARY", "libnftables-missing.so.0")
    monkeypatch.setattr(nftables, "_lib", None)
    with pytest.raises(UserError, match=r"--port= needs nftables \(libnftables1\)"):
        plan_of(settings("x", network_veth=True, ports=["80"]))


@needs_root
def test_port_rules_follow_the_container_address_and_go_with_teardown(container):
    net = netns_setup(plan_of(settings("tport1", network_veth=True, ports=["tcp:18080:80", "udp:5300"])),
                      container)
    try:
        watcher, _ = net.port_watcher
        assert not any("tport1" in r for r in nat_rules())  # no address yet, no rules
        sh(f"nsenter -t {container} -n ip addr add 10.231.7.2/30 dev host0")
        sh(f"nsenter -t {container} -n ip link set host0 up")
        rules = wait_for(lambda: [r for r in nat_rules() if "nspawnpy:tport1:" in r], what="rules")
        assert len(rules) == 4 and all("10.231.7.2" in r for r in rules)
        assert sum("tcp dport 18080 dnat to 10.231.7.2:80" in r for r in rules) == 2
        assert sum("udp dport 5300 dnat to 10.231.7.2:5300" in r for r in rules) == 2
        # A new address: the rules are re-pointed (nspawn's "New container IP is ...").
        sh(f"nsenter -t {container} -n ip addr del 10.231.7.2/30 dev host0")
        sh(f"nsenter -t {container} -n ip addr add 10.231.7.6/30 dev host0")
        wait_for(lambda: [r for r in nat_rules() if "nspawnpy:tport1:" in r and "10.231.7.6" in r],
                 what="re-pointed rules")
        assert len([r for r in nat_rules() if "nspawnpy:tport1:" in r]) == 4
    finally:
        net.teardown()
    assert not os.path.exists(f"/proc/{watcher}")
    assert not any("tport1" in r for r in nat_rules())
    assert our_nft_tables() == [] or nat_rules() != []  # the table goes with its last rule
    assert_no_leftovers()


@needs_root
def test_two_machines_share_the_table_and_remove_only_their_own_rules(container, container2):
    nets = []
    try:
        for name, pid, addr in (("tportA", container, "10.231.8.2"), ("tportB", container2, "10.231.8.6")):
            nets.append(netns_setup(plan_of(settings(name, network_veth=True, ports=["18081:80"])), pid))
            sh(f"nsenter -t {pid} -n ip addr add {addr}/30 dev host0")
            wait_for(lambda: any(f"nspawnpy:{name}:" in r for r in nat_rules()), what=name)
        nets[0].teardown()
        left = nat_rules()
        assert not any("tportA" in r for r in left) and len([r for r in left if "tportB" in r]) == 2
    finally:
        for net in nets:
            net.teardown()
    assert not any("tportA" in r or "tportB" in r for r in nat_rules())
    assert_no_leftovers()


@needs_root
def test_port_teardown_works_from_a_forked_cleanup_process_after_the_watcher_died(container):
    net = netns_setup(plan_of(settings("tportf", network_veth=True, ports=["18082:80"])), container)
    sh(f"nsenter -t {container} -n ip addr add 10.231.9.2/30 dev host0")
    wait_for(lambda: any("nspawnpy:tportf:" in r for r in nat_rules()), what="rules")
    teardown_in_forked_process(net)
    assert not any("tportf" in r for r in nat_rules())
    net.teardown()
    assert_no_leftovers()


STALE_SWEEP = """
import os, subprocess
from nspawnpy.config import netspec
from nspawnpy.supervisor import nftables
dead = subprocess.Popen(["true"]); dead.wait()   # a PID that no longer exists
ports = [netspec.Port("tcp", 18090, 80)]
nftables.forward(ports, "10.231.10.2", nftables.make_tag("tdead", dead.pid))
nftables.forward(ports, "10.231.10.6", nftables.make_tag("tlive", os.getpid()))
print(subprocess.run(["nft", "list", "table", "ip", nftables.TABLE], capture_output=True, text=True).stdout)
nftables.unforward(nftables.make_tag("tlive", os.getpid()))
"""


@needs_root
def test_rules_of_a_container_that_died_uncleaned_are_swept_by_the_next_instance(container):
    r = sh(f"nsenter -t {container} -n {sys.executable} -c '{STALE_SWEEP}'", cwd=REPO,
           env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert "tlive" in r.stdout and "tdead" not in r.stdout
    assert our_nft_tables(container) == []


HTTP_PAYLOAD = ("ip addr add {cont}/30 dev host0; ip link set host0 up; ip route add default via {host}; "
                "httpd -p 80 -h /www; echo serving; while [ ! -e /stop ]; do sleep 0.1; done")


def _port_container(root, machine, port, cont_ip, host_ip, netns_pid=None, options=None):
    """Start nspawnpy with -n -p tcp:PORT:80 (or `options`) and busybox httpd; returns the Popen."""
    (root / "www").mkdir(exist_ok=True)
    (root / "www" / "index.html").write_text(f"hello from {machine}\n")
    pre = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
    cmd = pre + [sys.executable, "-m", "nspawnpy", "--register=no", "-q", "-D", str(root), "-M", machine,
                 *(["-n", f"--port=tcp:{port}:80"] if options is None else options), "/bin/sh", "-c",
                 HTTP_PAYLOAD.format(cont=cont_ip, host=host_ip)]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    ve = netspec.veth_host_name(machine)
    ns = f"nsenter -t {netns_pid} -n " if netns_pid else ""
    wait_for(lambda: p.poll() is not None or sh(ns + f"ip link show {ve}", check=False).returncode == 0,
             what=ve)
    assert p.poll() is None, p.stderr.read()
    sh(ns + f"ip addr add {host_ip}/30 dev {ve}")
    sh(ns + f"ip link set {ve} up")
    assert p.stdout.readline().strip() == "serving"
    return p


HTTP_GET = """
import sys, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
except OSError as e:
    sys.exit(str(e))
"""


def _http_get(url, ns_pid=None, timeout=10.0):
    """GET `url` (from the netns of `ns_pid` if given), retrying until the rules are in place."""
    pre = ["nsenter", "-t", str(ns_pid), "-n"] if ns_pid else []
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(pre + [sys.executable, "-c", HTTP_GET, url], capture_output=True, text=True,
                           env=dict(os.environ, no_proxy="*"))
        if r.returncode == 0 or time.monotonic() > deadline:
            return r.stdout or r.stderr
        time.sleep(0.1)


def _leftovers_of(machine, root):
    """leftovers() that belong to this run (other engineers' tests may run concurrently)."""
    from testhost import leftovers
    return [x for x in leftovers() if machine in x or str(root) in x]


def _stop(p, root):
    (root / "stop").touch()
    out, err = p.communicate(timeout=30)
    return p.returncode, err


e2e = pytest.mark.skipif(not (IS_ROOT and os.path.exists("/bin/busybox")),
                         reason="needs root and busybox-static")


@e2e
def test_launcher_forwards_a_host_port_to_the_container_from_the_host(busybox_root):
    machine, port = f"tp-{os.getpid() % 100000}", 20000 + os.getpid() % 20000
    p = _port_container(busybox_root, machine, port, "10.231.1.2", "10.231.1.1")
    try:
        assert _http_get(f"http://10.231.1.1:{port}/") == f"hello from {machine}\n"
        rules = [r for r in nat_rules() if f"nspawnpy:{machine}:" in r]
        assert len(rules) == 2 and all("dnat to 10.231.1.2:80" in r for r in rules)
        status, err = _stop(p, busybox_root)
        assert status == 0, err
    finally:
        stop(p)
    assert not any(machine in r for r in nat_rules())
    assert _leftovers_of(machine, busybox_root) == []


@e2e
def test_launcher_forwards_traffic_from_a_peer_namespace_through_prerouting(busybox_root):
    """The "host" is a namespace of the test (with forwarding on); a peer namespace on a veth
    connects to the host's address and reaches the container."""
    host, peer = spawn_netns(), spawn_netns()
    try:
        hp = f"nsenter -t {host.pid} -n "
        sh(hp + "sysctl -q -w net.ipv4.ip_forward=1")
        sh(hp + "ip link set lo up")
        sh(hp + f"ip link add tpeer type veth peer name tpeerp netns {peer.pid}")
        sh(hp + "ip addr add 10.231.2.1/30 dev tpeer")
        sh(hp + "ip link set tpeer up")
        sh(f"nsenter -t {peer.pid} -n ip addr add 10.231.2.2/30 dev tpeerp")
        sh(f"nsenter -t {peer.pid} -n ip link set tpeerp up")
        machine = f"tq-{os.getpid() % 100000}"
        p = _port_container(busybox_root, machine, 8080, "10.231.3.2", "10.231.3.1", netns_pid=host.pid)
        try:
            assert _http_get("http://10.231.2.1:8080/", ns_pid=peer.pid) == f"hello from {machine}\n"
            status, err = _stop(p, busybox_root)
            assert status == 0, err
        finally:
            stop(p)
        assert nat_rules(host.pid) == [] and our_nft_tables(host.pid) == []
    finally:
        stop(peer)
        stop(host)


@e2e
def test_port_from_a_trusted_nspawn_file_is_forwarded(busybox_root):
    machine, port = f"tf-{os.getpid() % 100000}", 20002 + os.getpid() % 20000
    settings_file = Path(f"/run/systemd/nspawn/{machine}.nspawn")
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(f"[Network]\nVirtualEthernet=yes\nPort=tcp:{port}:80\n")
    try:
        p = _port_container(busybox_root, machine, port, "10.231.5.2", "10.231.5.1", options=[])
        try:
            assert _http_get(f"http://10.231.5.1:{port}/") == f"hello from {machine}\n"
            status, err = _stop(p, busybox_root)
            assert status == 0, err
        finally:
            stop(p)
    finally:
        settings_file.unlink()
    assert not any(machine in r for r in nat_rules())
    assert _leftovers_of(machine, busybox_root) == []


@e2e
def test_rules_are_removed_after_nspawnpy_is_killed(busybox_root):
    machine, port = f"tk-{os.getpid() % 100000}", 20001 + os.getpid() % 20000
    p = _port_container(busybox_root, machine, port, "10.231.4.2", "10.231.4.1")
    try:
        wait_for(lambda: any(f"nspawnpy:{machine}:" in r for r in nat_rules()), what="rules")
        p.kill()  # SIGKILL the supervisor: the janitor tears down
        p.wait()
        wait_for(lambda: not any(machine in r for r in nat_rules()), timeout=40, what="rules removed")
        wait_for(lambda: _leftovers_of(machine, busybox_root) == [], timeout=10, what="no leftovers")
    finally:
        stop(p)
    assert _leftovers_of(machine, busybox_root) == []


# ---------------------------------------------------------------------------
# against the real systemd-nspawn

NSPAWN_IN_CGROUP = r"""
# Run systemd-nspawn in throwaway cgroups (it leaves payload/supervisor groups behind
# when started from the root cgroup) and remove them afterwards.
cg=nspawnpy-nettest-$$
for h in systemd unified; do
    mkdir -p /sys/fs/cgroup/$h/$cg && echo $$ > /sys/fs/cgroup/$h/$cg/cgroup.procs
done
systemd-nspawn --register=no --keep-unit -q -D "$ROOT" -M "$NAME" --network-veth \
    --network-veth-extra=txref:cxref /bin/sh -c \
    'cat /sys/class/net/host0/address /sys/class/net/cxref/address; sleep 2'
rc=$?
for h in systemd unified; do
    echo $$ > /sys/fs/cgroup/$h/cgroup.procs
    find /sys/fs/cgroup/$h/$cg -depth -type d -exec rmdir {} \; 2>/dev/null
done
exit $rc
"""


@needs_root
@pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="needs systemd-nspawn")
def test_names_and_macs_match_the_real_systemd_nspawn(busybox_root):
    name = "tnspawnreferencecheck"
    root = busybox_root
    propagate = Path("/run/systemd/nspawn/propagate") / name
    had_propagate = propagate.exists()
    env = dict(os.environ, ROOT=str(root), NAME=name)
    p = subprocess.Popen(["sh", "-c", NSPAWN_IN_CGROUP], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        host0 = p.stdout.readline().strip()
        cxref = p.stdout.readline().strip()
        host_name = netspec.veth_host_name(name)
        assert host_name != "ve-" + name and len(host_name) == 15
        names = link_names()
        assert host_name in names, (names, p.stderr.read() if p.poll() is not None else "")
        assert mac_of(host_name) == netspec.container_mac(name, netspec.HOST_KEY)
        assert mac_of("txref") == netspec.container_mac(name, netspec.VETH_EXTRA_HOST_KEY, 0)
        assert host0 == netspec.container_mac(name, netspec.CONTAINER_KEY)
        assert cxref == netspec.container_mac(name, netspec.VETH_EXTRA_CONTAINER_KEY, 0)
    finally:
        p.wait(timeout=60)
        if not had_propagate and propagate.is_dir():
            shutil.rmtree(propagate, ignore_errors=True)
        sh(f"ip link del {netspec.veth_host_name(name)}", check=False)
        sh("ip link del txref", check=False)
