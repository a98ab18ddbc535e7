"""Loop devices for -i, made without udev: a free one from /dev/loop-control and
LOOP_CONFIGURE on it with the image's descriptor, one device per file system (offset and
size limit select the partition), so nothing waits for partition device nodes.

Every device is set to clear itself (LO_FLAGS_AUTOCLEAR): once its descriptor is closed
and the file system mounted from it is gone (with the last mount namespace that held it),
the kernel detaches it; a supervisor killed at any moment leaves none behind.

Runs in: the host side, before clone (the nspawnpy process that becomes the supervisor).
"""

import fcntl
import os
import struct

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY, LO_FLAGS_AUTOCLEAR = 1, 4
# struct loop_config: fd, block_size, then struct loop_info64 (device, inode, rdevice,
# offset, sizelimit, number, encrypt_type, encrypt_key_size, flags, file_name[64],
# crypt_name[64], encrypt_key[32], init[2]), then 8 reserved u64
LOOP_CONFIG = struct.Struct("<II QQQQQ IIII 64s64s32s 2Q 8Q")
ATTEMPTS = 64   # another process may take the free device between our two calls


def attach(image_fd: int, offset: int, size: int, read_only: bool) -> int:
    """An open (close-on-exec) loop device showing `size` bytes of the image from
    `offset`. Closing it without mounting it detaches it again."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(ATTEMPTS):
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            device = _configure(number, image_fd, offset, size, read_only)
            if device is not None:
                return device
    finally:
        os.close(control)
    raise OSError(16, "no free loop device could be configured")


def _configure(number: int, image_fd: int, offset: int, size: int, read_only: bool):
    """The configured device's descriptor, or None if someone else took it first."""
    mode = os.O_RDONLY if read_only else os.O_RDWR
    device = os.open(f"/dev/loop{number}", mode | os.O_CLOEXEC)
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    config = LOOP_CONFIG.pack(image_fd, 0, 0, 0, 0, offset, size, 0, 0, 0, flags,
                              b"", b"", b"", 0, 0, *([0] * 8))
    try:
        fcntl.ioctl(device, LOOP_CONFIGURE, config)
    except OSError as e:
        os.close(device)
        if e.errno == 16:   # EBUSY: bound meanwhile by another process
            return None
        raise
    return device
