"""--port: DNAT rules that follow the container's IPv4 address.

Like nspawn, the rules are added once the container has an address and are re-pointed
whenever that address changes. A small helper process forked here (only when ports are
forwarded) listens for address changes inside the container's namespace; the supervisor's
loop stays untouched. It dies with the supervisor (PDEATHSIG), and teardown finds the rules
by their tag, so a forked cleanup process can remove them without the helper.

Runs in: the supervisor (start, stop) and the port watcher, a child that reads the
container's network namespace and writes the host's nftables rules.
"""

import errno
import logging
import os

from .. import linux

log = logging.getLogger("nspawnpy.network")
CLONE_NEWNET = 0x40000000

RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
RT_SCOPE_HOST = 254


def start(plan, net, pid):
    """Fork the watcher for `net` (a network.Network) and PID 1 `pid`; sets net.port_tag
    and net.port_watcher."""
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


def stop(pid, pidfd):
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

    linux.setns(container_netns_fd, CLONE_NEWNET)
    events, query = _netlink(RTMGRP_IPV4_IFADDR), _netlink(0)
    linux.setns(host_netns_fd, CLONE_NEWNET)  # libnftables must talk to the host's netfilter
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
