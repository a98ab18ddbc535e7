"""-i/--image=: which file systems of a disk image go where, decided from the image's own
bytes as systemd-nspawn 252 decides it (its dissect step): a GPT laid out per the
Discoverable Partitions Specification (root for this architecture, /usr, /home, /srv,
/var, /var/tmp, XBOOTLDR at /boot, the ESP at /efi or /boot; the no-auto flag skips a
partition, the read-only flag makes it read-only; swap and unknown types are ignored; a
lone generic Linux partition serves as root), an MBR whose one bootable 0x83 partition is
root, or a bare file system spanning the whole image.

Runs in: the host side, before clone (reads the image through a descriptor).
"""

import os
import re

from ..errors import UserError
from ..record import Record
from . import gpt

GPT_FLAG_READ_ONLY = 1 << 60
GPT_FLAG_NO_AUTO = 1 << 63
GPT_FLAG_NO_BLOCK_IO = 1 << 1   # the ESP's "no block I/O protocol" bit: nspawn skips it
ARCH_TYPES = {   # (root, /usr) partition types per architecture
    "x86_64": ("4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "8484680c-9521-48c6-9c11-b0720656f69e"),
    "aarch64": ("b921b045-1df0-41c3-af44-4c6f280d3fae", "b0e01050-ee5f-4390-949a-9101b17104e9"),
}
ROOT_TYPE, USR_TYPE = ARCH_TYPES.get(os.uname().machine, ("", ""))
GENERIC_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
DESIGNATORS = {   # type -> where it is mounted, in nspawn's mount order
    ROOT_TYPE: "/", USR_TYPE: "/usr",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "/home",
    "3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "/srv",
    "4d21b016-b534-45c2-a9fb-5c16e091fd2d": "/var",
    "7ec6f557-3bc5-4aca-b293-16ef5df639d1": "/var/tmp",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "/boot",
    ESP_TYPE: "esp",
}
MOUNT_ORDER = ("/", "/usr", "/home", "/srv", "/var", "/var/tmp", "/boot", "esp")
# (fstype, offset, magic): what a file system's superblock starts with
MAGICS = (
    ("ext4", 0x438, b"\x53\xef"), ("btrfs", 0x10040, b"_BHRfS_M"), ("xfs", 0, b"XFSB"),
    ("squashfs", 0, b"hsqs"), ("erofs", 1024, b"\xe2\xe1\xf5\xe0"),
    ("f2fs", 1024, b"\x10\x20\xf5\xf2"), ("crypto_LUKS", 0, b"LUKS\xba\xbe"),
    ("swap", 4086, b"SWAPSPACE2"),
)
UNIDENTIFIED = "Couldn't identify a suitable partition table or file system."
NOT_BOOTABLE = ("Note that the disk image needs to either contain only a single MBR partition "
                "of type 0x83 that is marked bootable, or a single GPT partition of type "
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4 or follow "
                "https://systemd.io/DISCOVERABLE_PARTITIONS to be bootable with nspawnpy.")


class ImagePart(Record):
    """One file system of the image and where it goes ("esp": /efi or /boot, decided when
    the tree is there)."""
    where: str
    start: int                # byte offset in the image
    size: int                 # bytes
    read_only: bool           # the partition's own read-only flag
    fstype: str


def dissect(fd: int, image: str) -> list[ImagePart]:
    """The file systems to mount, root first. Every error names the image."""
    size = os.fstat(fd).st_size or _block_size(fd)
    try:
        table = gpt.read_gpt(fd, size)
        if table is not None:
            if not gpt.has_protective_mbr(gpt.read_mbr(fd)):
                raise gpt.PartitionTableError("GPT without a protective MBR")
            return _from_gpt(fd, image, table[1])
        whole = fstype_at(fd, 0, size)
        if whole is not None:
            return [ImagePart("/", 0, size, False, _usable(whole, image))]
        mbr = gpt.read_mbr(fd)
        if mbr is not None:
            return _from_mbr(fd, image, mbr, size)
    except gpt.PartitionTableError as e:   # nspawn finds no table there; we say why
        raise UserError(f"{image}: {UNIDENTIFIED[:-1]} (bad partition table: {e}).") from None
    raise UserError(f"{image}: {UNIDENTIFIED} {NOT_BOOTABLE}")


def _block_size(fd: int) -> int:
    """A block device's size (st_size is 0 for those)."""
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


def _from_gpt(fd: int, image: str, partitions: list) -> list[ImagePart]:
    chosen: dict[str, gpt.Partition] = {}
    generic = []
    for part in partitions:
        if part.type_uuid == ESP_TYPE and part.flags & GPT_FLAG_NO_BLOCK_IO:
            continue
        if part.flags & GPT_FLAG_NO_AUTO and part.type_uuid != ESP_TYPE:
            continue
        if part.type_uuid == GENERIC_TYPE:
            generic.append(part)
            continue
        where = DESIGNATORS.get(part.type_uuid)
        if where is None:
            continue   # swap, verity, other architectures, foreign types
        if where in chosen and not (where in ("/", "/usr")
                                    and _version_key(part.label) > _version_key(chosen[where].label)):
            continue   # the first wins; root and /usr: the newest version in the label
        chosen[where] = part
    if "/" not in chosen:
        if len(generic) > 1:
            raise UserError(f"{image}: Multiple suitable root partitions found in image.")
        if not generic:
            raise UserError(f"{image}: No suitable root partition found in image.")
        chosen["/"] = generic[0]
    return [_part(fd, image, where, chosen[where]) for where in MOUNT_ORDER if where in chosen]


def _version_key(label: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", label)]


def _part(fd: int, image: str, where: str, part) -> ImagePart:
    fstype = "vfat" if where == "esp" else fstype_at(fd, part.start, part.size)
    if fstype is None or (where == "esp" and not _is_vfat(fd, part.start)):
        raise UserError(f"{image}: partition {part.number} ({where if where != 'esp' else 'ESP'}): "
                        "File system type not supported or not known.")
    return ImagePart(where, part.start, part.size, bool(part.flags & GPT_FLAG_READ_ONLY),
                     _usable(fstype, image))


def _from_mbr(fd: int, image: str, mbr: list, size: int) -> list[ImagePart]:
    roots = [(first, count) for ptype, boot, first, count in mbr
             if ptype == 0x83 and boot == 0x80 and count]
    if not roots:
        raise UserError(f"{image}: No suitable root partition found in image.")
    if len(roots) > 1:
        raise UserError(f"{image}: Multiple suitable root partitions found in image.")
    first, count = roots[0]
    start, length = first * 512, count * 512
    if first == 0 or start + length > size:
        raise UserError(f"{image}: {UNIDENTIFIED[:-1]} (bad partition table: partition 1 "
                        "lies outside the image).")
    fstype = fstype_at(fd, start, length)
    if fstype is None:
        raise UserError(f"{image}: File system type not supported or not known.")
    return [ImagePart("/", start, length, False, _usable(fstype, image))]


def _usable(fstype: str, image: str) -> str:
    if fstype == "crypto_LUKS":
        raise UserError(f"{image}: Encrypted (LUKS) file systems are not supported by nspawnpy.")
    if fstype == "swap":
        raise UserError(f"{image}: File system type not supported or not known.")
    return fstype


def fstype_at(fd: int, start: int, size: int) -> str | None:
    """The file system whose superblock is at `start` (None: none we know)."""
    for fstype, offset, magic in MAGICS:
        if offset + len(magic) <= size and os.pread(fd, len(magic), start + offset) == magic:
            return fstype
    return "vfat" if size >= 512 and _is_vfat(fd, start) else None


def _is_vfat(fd: int, start: int) -> bool:
    boot = os.pread(fd, 512, start)
    return len(boot) == 512 and boot[510:] == b"\x55\xaa" and (
        boot[0x36:0x39] == b"FAT" or boot[0x52:0x57] == b"FAT32")
