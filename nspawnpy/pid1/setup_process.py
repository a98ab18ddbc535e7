"""With --private-users, the process that builds the container's tree, as nspawn's "outer
child" does: cloned by the supervisor into a mount namespace of its own, it keeps the
host's privileges, so the device nodes are real ones owned by the container's root, /sys
is the host's sysfs, the tmpfs belong to the container's root, and the tree is the
ID-mapped one. It then clones PID 1 (as the supervisor's child) into the new user, mount,
PID, UTS, IPC (and network) namespaces, where the kernel locks the copied mounts' flags
(a read-only /sys cannot be made writable), tells the supervisor PID 1's PID and exits.

Runs in: the set-up process, from the supervisor's clone() to PID 1's.
"""

import os

from .. import linux, protocol
from . import main


def run(plan, channels, pid1_flags: int, idmap) -> None:
    """Never returns."""
    try:
        main._start_process()
        root = main.build(plan, idmap.tree if idmap is not None else None, plan.userns.base)
        os.chdir(root)   # PID 1's copy of it is where PID 1 starts
        pid = linux.clone(pid1_flags)
        if pid == 0:
            main.run_in_userns(plan, channels)
        channels.sync.send(protocol.PID1 + str(pid).encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - everything is reported, nothing escapes
        main.report(channels.sync, main._describe(e))
        os._exit(1)
