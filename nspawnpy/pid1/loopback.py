"""The loopback link of a private network, set up as nspawn's loopback set-up leaves it: ::1/128
added with IFA_F_NOPREFIXROUTE before the link goes up (the kernel's own ::1 would carry a
prefix route), then the link up (the kernel adds 127.0.0.1/8 itself).

Runs in: PID 1, in the container's network namespace, before the payload starts.
"""

import _socket
import fcntl
import struct

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
NETLINK_ROUTE, RTM_NEWADDR = 0, 20
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, IFA_F_NOPREFIXROUTE = 1, 2, 8, 0x200
RT_SCOPE_HOST = 254
LOOPBACK_IFINDEX = 1  # lo is the first link of every network namespace
IPV6_LOOPBACK = bytes(15) + b"\x01"


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("HH", 4 + len(data), kind) + data + bytes(-len(data) % 4)


def add_ipv6_loopback_address() -> None:
    """::1/128 on lo, without a prefix route; quietly nothing where IPv6 is off."""
    body = struct.pack("BBBBI", _socket.AF_INET6, 128, 0, RT_SCOPE_HOST, LOOPBACK_IFINDEX)
    body += _attr(IFA_LOCAL, IPV6_LOOPBACK) + _attr(IFA_ADDRESS, IPV6_LOOPBACK)
    body += _attr(IFA_FLAGS, struct.pack("I", IFA_F_NOPREFIXROUTE))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    message = struct.pack("IHHII", 16 + len(body), RTM_NEWADDR, flags, 1, 0) + body
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                              NETLINK_ROUTE)
    except OSError:
        return
    try:
        sock.send(message)
        sock.recv(4096)  # the ack (or an error: no IPv6, already there) -- nothing to do
    except OSError:
        pass
    finally:
        sock.close()


def loopback_up() -> None:
    add_ipv6_loopback_address()
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        sock.close()
