"""Loading the payload's compiled seccomp filters (the host side compiled them, or found
them in the cache: seccomp/cache.py) into the calling process, right before exec.

Runs in: PID 1 after pivot_root (or the payload's PID 2 with --as-pid2), and nspawnpyctl
attach's child before it execs.
"""

import os

from ..errors import UserError

# Errors on which nspawn gives up instead of skipping an architecture.
LOAD_FATAL = {12, 1, 13, 14}   # ENOMEM EPERM EACCES EFAULT


def load(programs) -> None:
    """Load compiled (BPF program, fatal message or None) pairs into this process, in order.

    Like nspawn: ENOMEM/EPERM/EACCES/EFAULT are fatal for filters that carry a
    message; any other failure skips that one architecture's filter.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    for code, fatal in programs:
        prog = SockFprog(len(code) // 8, code)
        if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) < 0:   # PR_SET_SECCOMP, MODE_FILTER
            err = ctypes.get_errno()
            if fatal is not None and err in LOAD_FATAL:
                raise UserError(f"{fatal}: {os.strerror(err)}")
