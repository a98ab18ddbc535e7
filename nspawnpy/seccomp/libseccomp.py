"""libseccomp through ctypes: the few entry points nspawn's filters need (make a filter per
architecture, resolve names, add rules, export BPF), with nspawn's conventions.

Runs in: the host side before clone, only when the filters are not cached.
"""

from __future__ import annotations

import os
from ..errors import UserError

if False:  # annotations only: importing typing costs ~5 ms
    from collections.abc import Callable, Iterable

# A compiled filter: (BPF program, message if a load error is fatal, None if ignored).
Program = "tuple[bytes, str | None]"

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ATTR_ACT_BADARCH = 2
_SCMP_ATTR_CTL_NNP = 3
_NR_SCMP_ERROR = -1


_LIB: "Libseccomp | None" = None


def lib() -> "Libseccomp":
    """The library, loaded once."""
    global _LIB
    if _LIB is None:
        _LIB = Libseccomp()
    return _LIB


class Libseccomp:
    """The few libseccomp entry points nspawn uses, with its conventions (negative errno)."""

    def __init__(self) -> None:
        import ctypes

        try:
            so = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError:
            import ctypes.util
            path = ctypes.util.find_library("seccomp")
            if path is None:
                raise UserError("Failed to load libseccomp: libseccomp.so.2 not found") from None
            so = ctypes.CDLL(path, use_errno=True)

        class ArgCmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]
        self._ArgCmp = ArgCmp

        u32, vp, i = ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int
        for fname, res, args in (
            ("seccomp_init", vp, [u32]),
            ("seccomp_release", None, [vp]),
            ("seccomp_arch_native", u32, []),
            ("seccomp_arch_add", i, [vp, u32]),
            ("seccomp_arch_remove", i, [vp, u32]),
            ("seccomp_attr_set", i, [vp, i, u32]),
            ("seccomp_syscall_resolve_name", i, [ctypes.c_char_p]),
            ("seccomp_rule_add_exact_array", i, [vp, u32, i, ctypes.c_uint, ctypes.POINTER(ArgCmp)]),
            ("seccomp_export_bpf", i, [vp, i]),
        ):
            fn = getattr(so, fname)
            fn.restype, fn.argtypes = res, args
        self._so = so
        self._native = so.seccomp_arch_native()
        self._resolved: dict[str, int] = {}

    # -- names --
    def resolve(self, name: str) -> int:
        nr = self._resolved.get(name)
        if nr is None:
            nr = self._resolved[name] = self._so.seccomp_syscall_resolve_name(name.encode())
        return nr

    def resolve_all(self, names: Iterable[str]) -> list[tuple[str, int]]:
        out = []
        for name in names:
            nr = self.resolve(name)
            if nr != _NR_SCMP_ERROR:
                out.append((name, nr))
        return out

    # -- filters --
    def each_arch(self, archs: list[int], default_action: int,
                  body: Callable[[int], Program | None]) -> list[Program]:
        """body(filter) for a fresh filter per architecture; collects what it returns."""
        out = []
        for arch in archs:
            ctx = self._new(arch, default_action)
            try:
                program = body(ctx)
            finally:
                self._so.seccomp_release(ctx)
            if program is not None:
                out.append(program)
        return out

    def _new(self, arch: int, default_action: int) -> int:
        """A filter for exactly one architecture; other arches pass, NNP is left alone."""
        so = self._so
        ctx = so.seccomp_init(default_action)
        if not ctx:
            raise UserError("Failed to allocate seccomp object: Cannot allocate memory")
        try:
            steps = []
            if arch not in (0, self._native):
                steps += [lambda: so.seccomp_arch_remove(ctx, self._native),
                          lambda: so.seccomp_arch_add(ctx, arch)]
            steps += [lambda: so.seccomp_attr_set(ctx, _SCMP_ATTR_ACT_BADARCH, _SCMP_ACT_ALLOW),
                      lambda: so.seccomp_attr_set(ctx, _SCMP_ATTR_CTL_NNP, 0)]
            for step in steps:
                r = step()
                if r < 0:
                    raise UserError(f"Failed to allocate seccomp object: {os.strerror(-r)}")
        except BaseException:
            so.seccomp_release(ctx)
            raise
        return ctx

    def add(self, ctx: int, action: int, nr: int, *conds: tuple[int, ...]) -> int:
        if not conds:
            return self._so.seccomp_rule_add_exact_array(ctx, action, nr, 0, None)
        arr = (self._ArgCmp * len(conds))(*(
            self._ArgCmp(c[0], c[1], c[2], c[3] if len(c) > 3 else 0) for c in conds))
        return self._so.seccomp_rule_add_exact_array(ctx, action, nr, len(conds), arr)

    def set_attr(self, ctx: int, attr: int, value: int) -> int:
        return self._so.seccomp_attr_set(ctx, attr, value)

    def export(self, ctx: int) -> bytes:
        """The filter as a raw BPF program (struct sock_filter[])."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            r = self._so.seccomp_export_bpf(ctx, fd)
            if r < 0:
                raise UserError(f"Failed to generate seccomp filter: {os.strerror(-r)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
