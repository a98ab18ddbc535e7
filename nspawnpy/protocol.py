"""The messages between the supervisor and the container's PID 1, on their socketpair.

Imported by both processes (PID 1 before pivot_root), so it needs nothing but
the language itself. One message per datagram; fds travel as SCM_RIGHTS.

  PID 1 -> supervisor  READY       file system built; carries the console's pty master and the
                                   /proc/kmsg FIFO held open, each if any (ready() says which)
  PID 1 -> supervisor  ERROR+text  set-up failed; the text is the one-line error to print
  set-up -> supervisor PID1+pid    (with --private-users) the set-up process cloned PID 1
  supervisor -> PID 1  USERNS_SET  UID/GID maps written (only with --private-users)
  supervisor -> PID 1  GO          host side ready (cgroups, links, registration): pivot and exec
After exec the socket closes on PID 1's side (close-on-exec): EOF means "exec happened".

Runs in: the supervisor and PID 1 (before pivot_root).
"""

READY = b"R"
GO = b"G"
USERNS_SET = b"U"
PID1 = b"P"
ERROR = b"E"
# READY's flags: which fds follow, in this order
WITH_CONSOLE, WITH_KMSG = b"c", b"k"


def ready(console: bool, kmsg: bool) -> bytes:
    return READY + (WITH_CONSOLE if console else b"") + (WITH_KMSG if kmsg else b"")


def ready_fds(message: bytes, fds: list[int]) -> tuple[int | None, int | None]:
    """(console pty master, kmsg FIFO) from READY's message and fds."""
    it = iter(fds)
    console = next(it, None) if WITH_CONSOLE in message[1:] else None
    kmsg = next(it, None) if WITH_KMSG in message[1:] else None
    return console, kmsg

# <sys/socket.h>: level and type of a control message that passes file descriptors.
SOL_SOCKET, SCM_RIGHTS = 1, 1
# recvmsg() flag: the fds received are close-on-exec, so none can leak into an exec
# (the supervisor's next PID 1 after a reboot in place, or the payload).
MSG_CMSG_CLOEXEC = 0x40000000


def received_fds(ancdata) -> list[int]:
    """The file descriptors in recvmsg()'s control messages."""
    fds = []
    for level, kind, data in ancdata:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(int.from_bytes(data[i:i + 4], "little", signed=True)
                       for i in range(0, usable, 4))
    return fds


def fds_to_send(fds) -> list:
    """sendmsg()'s control messages that pass `fds` (none for an empty list)."""
    if not fds:
        return []
    data = b"".join(fd.to_bytes(4, "little", signed=True) for fd in fds)
    return [(SOL_SOCKET, SCM_RIGHTS, data)]
