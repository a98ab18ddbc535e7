"""SipHash-2-4 (Aumasson & Bernstein), pure Python.

nspawn derives stable MAC addresses and shortened interface names from it;
the result is the 64-bit integer the reference implementation returns.

Runs in: the host side and the supervisor (interface names, MACs, UID ranges).
"""

_MASK = 0xFFFFFFFFFFFFFFFF


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(data: bytes, key: bytes) -> int:
    """Return SipHash-2-4 of `data` under the 16-byte `key` as an int."""
    if len(key) != 16:
        raise ValueError("siphash24 key must be 16 bytes")
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    data = bytes(data)
    full = len(data) - len(data) % 8
    for off in range(0, full, 8):
        m = int.from_bytes(data[off:off + 8], "little")
        v3 ^= m
        rounds(2)
        v0 ^= m
    tail = data[full:] + bytes(7 - len(data) % 8)
    last = int.from_bytes(tail, "little") | ((len(data) & 0xFF) << 56)
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3
