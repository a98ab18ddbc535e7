"""Disk images for the -i tests: ext4 file systems made with mkfs.ext4 -d from a tree, and a
small GPT writer (protective MBR, primary and backup header and entry array, CRC32s) that
can also be told to get things wrong, for the hostile-image cases."""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
import zlib
from pathlib import Path

ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
USR_X86_64 = "8484680c-9521-48c6-9c11-b0720656f69e"
HOME = "933ac7e1-2eb4-4f13-b844-0e14e2aef915"
SRV = "3b8f8425-20e0-4f3b-907f-1a25a76f98e8"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
GENERIC = "0fc63daf-8483-4772-8e79-3d69d8477de4"
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
XBOOTLDR = "bc13c2ff-59e6-4262-a352-b275fd6f7172"
FLAG_READ_ONLY = 1 << 60
FLAG_NO_AUTO = 1 << 63
ALIGN = 1 << 20   # partitions start on MiB boundaries, as partitioning tools place them


def ext4(path: Path | str, tree: Path | str | None, size_mb: int = 32) -> Path:
    """An ext4 file system image at *path* holding *tree* (empty if None)."""
    path = Path(path)
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", *(["-d", str(tree)] if tree else []), str(path)],
                   check=True, capture_output=True)
    return path


def _guid_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


class Part:
    def __init__(self, type_uuid: str, data: Path | bytes | int, flags: int = 0, label: str = ""):
        """*data*: a file system image to copy in, raw bytes, or a size in bytes (zeros)."""
        self.type_uuid, self.data, self.flags, self.label = type_uuid, data, flags, label

    def size(self) -> int:
        if isinstance(self.data, int):
            return self.data
        if isinstance(self.data, bytes):
            return len(self.data)
        return os.path.getsize(self.data)


def gpt(path: Path | str, parts: list[Part], sector: int = 512, entries: int = 128,
        corrupt: str = "") -> Path:
    """Write a GPT disk image. *corrupt*: "header-crc", "entries-crc", "past-eof" (the last
    partition ends past the image), "count" (a huge entry count, CRCs fixed up), "overlap",
    "truncate" (the image cut inside the entry array), "no-pmbr", "entry-past-usable" (a
    partition beyond the header's last usable sector, all else consistent), "array-past-eof"
    (the entry array's LBA beyond the image)."""
    path = Path(path)
    first_lba = ALIGN // sector
    layout, lba = [], first_lba
    for part in parts:
        count = -(-part.size() // ALIGN) * ALIGN // sector
        layout.append((part, lba, lba + count - 1))
        lba += count
    array_sectors = -(-entries * 128 // sector)
    total = lba + array_sectors + 1
    if corrupt == "overlap" and len(layout) > 1:
        part, first, last = layout[1]
        layout[1] = (part, first - 1, last)
    if corrupt == "past-eof":
        part, first, last = layout[-1]
        layout[-1] = (part, first, last + 1000 * ALIGN // sector)
    if corrupt == "entry-past-usable":
        part, first, last = layout[-1]
        layout[-1] = (part, first, last + 64)
    array = b"".join(_entry(part, first, last) for part, first, last in layout)
    array = array.ljust(entries * 128, b"\0")
    with open(path, "wb") as f:
        f.truncate(total * sector)
        if corrupt != "no-pmbr":
            f.write(_protective_mbr(total))
        for part, first, _ in layout:
            f.seek(first * sector)
            f.write(_data(part))
        count = 0x7FFFFFF if corrupt == "count" else entries
        last_usable = total - array_sectors - 2
        if corrupt == "past-eof":
            last_usable = layout[-1][2]
        array_lba = total + 1000 if corrupt == "array-past-eof" else 2
        primary = _header(1, total - 1, first_lba, last_usable, array_lba, count, array, corrupt)
        f.seek(sector)
        f.write(primary)
        f.seek(2 * sector)
        f.write(array)
        f.seek((total - 1) * sector)
        f.write(_header(total - 1, 1, first_lba, last_usable, total - 1 - array_sectors,
                        count, array, corrupt))
    if corrupt == "truncate":
        os.truncate(path, 2 * sector + 64)
    return path


def _data(part: Part) -> bytes:
    if isinstance(part.data, int):
        return b""
    if isinstance(part.data, bytes):
        return part.data
    return Path(part.data).read_bytes()


def _entry(part: Part, first: int, last: int) -> bytes:
    label = part.label.encode("utf-16-le")[:72].ljust(72, b"\0")
    return struct.pack("<16s16sQQQ72s", _guid_bytes(part.type_uuid), uuid.uuid4().bytes_le,
                       first, last, part.flags, label)


def _header(my_lba, other_lba, first_usable, last_usable, entries_lba, count, array,
            corrupt) -> bytes:
    entries_crc = zlib.crc32(array) ^ (1 if corrupt == "entries-crc" else 0)
    fields = [b"EFI PART", 0x10000, 92, 0, 0, my_lba, other_lba, first_usable, last_usable,
              uuid.uuid4().bytes_le, entries_lba, count, 128, entries_crc]
    raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
    crc = zlib.crc32(raw) ^ (1 if corrupt == "header-crc" else 0)
    return raw[:16] + struct.pack("<I", crc) + raw[20:]


def _protective_mbr(total_sectors: int) -> bytes:
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1,
                               min(total_sectors - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def mbr(path: Path | str, fs: Path, ptype: int = 0x83, bootable: bool = True) -> Path:
    """An MBR disk image with one primary partition (from 1 MiB on) holding *fs*."""
    path = Path(path)
    data = Path(fs).read_bytes()
    sectors = -(-len(data) // 512)
    table = bytearray(512)
    table[446:462] = struct.pack("<B3sB3sII", 0x80 if bootable else 0, b"\0\0\0", ptype,
                                 b"\0\0\0", ALIGN // 512, sectors)
    table[510:512] = b"\x55\xaa"
    with open(path, "wb") as f:
        f.write(table)
        f.seek(ALIGN)
        f.write(data)
        f.truncate(ALIGN + sectors * 512)
    return path
