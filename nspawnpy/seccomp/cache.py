"""The payload's compiled seccomp filters, from the on-disk cache or compiled (and cached).

Compiling nspawn's policy with libseccomp takes ~25 ms; a container start whose
filters are cached only needs this small module (no syscall tables, no libseccomp):
the cache key names the inputs plus the identity of the code and tables that made
the programs (policy.py, groups.py, libseccomp.py) and of the installed libseccomp.

Runs in: the host side before clone (plan/build.py), and nspawnpyctl attach; the filters
are loaded by pid1/seccomp_load.py.
"""

import os

DEFAULT_CACHE_DIR = "/run/nspawnpy/seccomp"
FORMAT = 2
_HERE = os.path.dirname(os.path.abspath(__file__))


def available() -> bool:
    """Whether the policy filters apply (SYSTEMD_SECCOMP=0 turns them off, as in nspawn)."""
    from ..config.values import parse_boolean
    try:
        if not parse_boolean(os.environ.get("SYSTEMD_SECCOMP", "1")):
            return False
    except ValueError:
        pass  # as in systemd: a value that is no boolean leaves seccomp on
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(21, 0, 0, 0, 0) < 0:                               # PR_GET_SECCOMP
        return False
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER with a NULL program fails with EFAULT iff supported.
    return libc.prctl(22, 2, None, 0, 0) < 0 and ctypes.get_errno() == 14


def _identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _libseccomp() -> str:
    """Identify the installed libseccomp without loading it (its file's identity)."""
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64",
              "/usr/lib", "/lib", "/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu"):
        identity = _identity(os.path.join(d, "libseccomp.so.2"))
        if identity != "missing":
            return identity
    return "unknown"


def key(caps, allow, deny, suppress_sync: bool, policy: bool) -> str:
    try:
        from _sha256 import sha256    # the builtin one; hashlib pulls in OpenSSL (~2 ms)
    except ImportError:
        from hashlib import sha256
    text = repr((FORMAT, _libseccomp(), os.uname().machine, sorted(caps), tuple(allow),
                 tuple(deny), suppress_sync, policy,
                 [_identity(os.path.join(_HERE, f)) for f in ("policy.py", "groups.py", "libseccomp.py")]))
    return sha256(text.encode()).hexdigest()


def trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def read(cache_dir: str, name: str):
    """The cached programs, or None (missing, untrusted or damaged entry)."""
    import struct

    try:
        if not trusted(os.stat(cache_dir)):
            return None
        fd = os.open(os.path.join(cache_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not trusted(os.fstat(fd)):
            return None
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    programs = []
    pos = 0
    try:
        while pos < len(data):
            size, mlen = struct.unpack_from("<II", data, pos)
            pos += 8
            code, pos = data[pos:pos + size], pos + size
            message = data[pos:pos + mlen].decode() if mlen else None
            pos += mlen
            if len(code) != size or size % 8:
                return None
            programs.append((code, message))
    except (struct.error, UnicodeDecodeError):
        return None
    return programs


def cached(cache_dir: str, name: str, build):
    """The programs cached under *name*, or build() them and cache them."""
    programs = read(cache_dir, name)
    if programs is None:
        programs = build()
        write(cache_dir, name, programs)
    return programs


def programs_for(caps, allow, deny, suppress_sync: bool) -> list:
    """nspawn's filters for these inputs, from the cache or compiled (and cached): what
    PID 1 loads before exec, and what nspawnpyctl attach loads to join the same policy."""
    policy = available()
    if not policy and not suppress_sync:
        return []

    def build():
        from . import policy as seccomp
        return seccomp.compile_filters(caps, allow, deny, suppress_sync, policy=policy)
    return cached(DEFAULT_CACHE_DIR, key(caps, allow, deny, suppress_sync, policy), build)


def write(cache_dir: str, name: str, programs) -> None:
    import struct

    blob = b"".join(struct.pack("<II", len(code), len(msg.encode()) if msg else 0) + code
                    + (msg.encode() if msg else b"") for code, msg in programs)
    tmp = os.path.join(cache_dir, f".{name}.{os.getpid()}")
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        if not trusted(os.stat(cache_dir)):
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(cache_dir, name))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
