"""A reader for the partition tables of a disk image: the GUID partition table (UEFI spec:
protective MBR, header at LBA 1, entry array, both checked by CRC32) and the plain MBR's
four primary entries. The image is hostile: every count, size and offset it states is
checked against the file before it is used, and any inconsistency is a PartitionTableError
(a one-line reason, without the image's name: the caller adds it); an entry outside the
usable area the header states is ignored, as libblkid (so systemd-nspawn) ignores it.

Runs in: the host side, before clone (reads through a file descriptor, mounts nothing).
"""

import os
import struct
import zlib

from ..record import Record

SECTOR_SIZES = (512, 4096)
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")   # the GPT header's first 92 bytes
ENTRY = struct.Struct("<16s16sQQQ72s")          # one 128-byte partition entry
MAX_ENTRY_ARRAY = 1 << 20    # bytes; the spec's minimum is 16 KiB, real tables stay small
MAX_PARTITIONS = 256         # used entries we consider at all


class PartitionTableError(Exception):
    pass


class Partition(Record):
    number: int              # 1-based index in the table
    type_uuid: str           # lower-case, dashed
    uuid: str
    start: int               # byte offset in the image
    size: int                # bytes
    flags: int               # GPT attribute bits (MBR: 0x80 if bootable)
    label: str = ""


def guid(raw: bytes) -> str:
    """The mixed-endian on-disk GUID as the usual dashed lower-case text."""
    a, b, c = struct.unpack("<IHH", raw[:8])
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise PartitionTableError("the image ends inside its partition table")
    return data


def read_mbr(fd: int) -> list | None:
    """The MBR's four primary entries as (type byte, boot flag, first LBA, sectors), or None
    when sector 0 carries no boot signature."""
    sector = os.pread(fd, 512, 0)
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    entries = []
    for i in range(4):
        boot, ptype, first, count = struct.unpack_from("<B3xB3xII", sector, 446 + 16 * i)
        entries.append((ptype, boot, first, count))
    return entries


def has_protective_mbr(mbr) -> bool:
    return mbr is not None and any(ptype == 0xEE for ptype, *_ in mbr)


def read_gpt(fd: int, image_size: int) -> tuple[int, list[Partition]] | None:
    """(sector size, used partitions) of the GPT, or None if there is no GPT signature at
    LBA 1 for either sector size. A signature with anything wrong behind it is an error."""
    for sector in SECTOR_SIZES:
        if image_size >= 2 * sector and os.pread(fd, 8, sector) == b"EFI PART":
            return sector, _read_table(fd, image_size, sector)
    return None


def _read_table(fd: int, image_size: int, sector: int) -> list[Partition]:
    raw = _pread(fd, sector, sector)
    (_, _, header_size, header_crc, _, my_lba, _, first_usable, last_usable, _,
     entries_lba, count, entry_size, entries_crc) = HEADER.unpack_from(raw)
    if not HEADER.size <= header_size <= sector:
        raise PartitionTableError(f"GPT header size {header_size} is out of range")
    if zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:header_size]) != header_crc:
        raise PartitionTableError("GPT header checksum mismatch")
    sectors = image_size // sector
    if my_lba != 1 or not 0 < first_usable <= last_usable < sectors:
        raise PartitionTableError("GPT header describes a disk larger than the image")
    if entry_size < ENTRY.size or entry_size % ENTRY.size or count == 0 \
            or count * entry_size > MAX_ENTRY_ARRAY:
        raise PartitionTableError(f"GPT entry array of {count} entries of {entry_size} bytes "
                                  "is out of range")
    array_start = entries_lba * sector
    if entries_lba < 2 or array_start + count * entry_size > image_size:
        raise PartitionTableError("GPT entry array lies outside the image")
    array = _pread(fd, count * entry_size, array_start)
    if zlib.crc32(array) != entries_crc:
        raise PartitionTableError("GPT entry array checksum mismatch")
    partitions = []
    for index in range(count):
        entry = ENTRY.unpack_from(array, index * entry_size)
        if entry[0] == bytes(16):
            continue
        if not first_usable <= entry[2] <= entry[3] <= last_usable:
            continue   # outside the usable area: ignored, as blkid ignores it
        partitions.append(_partition(index + 1, entry, sector))
        if len(partitions) > MAX_PARTITIONS:
            raise PartitionTableError(f"more than {MAX_PARTITIONS} partitions")
    check_no_overlap(partitions)
    return partitions


def _partition(number, entry, sector) -> Partition:
    type_raw, uuid_raw, first, last, flags, name = entry
    label = name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
    return Partition(number, guid(type_raw), guid(uuid_raw), first * sector,
                     (last - first + 1) * sector, flags, label)


def check_no_overlap(partitions: list[Partition]) -> None:
    ordered = sorted(partitions, key=lambda p: p.start)
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.start + before.size:
            raise PartitionTableError(f"partitions {before.number} and {after.number} overlap")
