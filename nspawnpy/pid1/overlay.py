"""--overlay= and --overlay-ro=: an overlayfs at a container path, its '+' layers and its
mount point resolved in the tree.

Runs in: PID 1, before pivot_root (execute); the op is built on the host side (plan/mounts.py).
"""

import os

from .. import intree, linux
from ..linux import MS_RDONLY
from .mounts import Op, mkdir_p


class Overlay(Op):
    def __init__(self, layers, where, read_only, scratch):
        self.layers, self.where, self.read_only, self.scratch = layers, where, read_only, scratch

    def execute(self, root):
        fds = []

        def resolve(layer, create=None):  # '+' layers are the container's, resolved in the tree
            if not layer.startswith("+"):
                if create and layer:
                    mkdir_p(layer)
                return layer
            fds.append(intree.chase(root, layer[1:], create))
            return intree.fd_path(fds[-1])
        try:
            writable = not self.read_only and len(self.layers) > 1
            layers = [resolve(layer) for layer in self.layers[:-1]]
            layers.append(resolve(self.layers[-1], "dir" if writable else None))
            scratch = resolve(self.scratch) if self.scratch else None  # '+': beside the upper
            fds.append(self.mount_point(root))
            self.mount(layers, intree.fd_path(fds[-1]), scratch)
        finally:
            for fd in fds:
                os.close(fd)

    def mount_point(self, root: str) -> int:
        """As nspawn, the mount point itself is made (in the tree), not the directories above."""
        where = intree.canonical(root, self.where, missing_ok=True)
        try:
            intree.make_dir(root, where)
        except OSError as e:
            raise OSError(e.errno, f"Creating mount point for overlay {intree.host_path(root)}"
                                   f"{where} failed: {os.strerror(e.errno)}") from None
        return intree.resolve(root, where)

    def mount(self, layers: list, target: str, scratch) -> None:
        if self.read_only or len(layers) == 1:
            lower = layers if len(layers) > 1 else layers + [target]
            options = "lowerdir=" + ":".join(_escape(p) for p in reversed(lower))
        else:
            upper = layers[-1] or scratch + "/upper"
            lowers = layers[:-1]
            work = scratch + "/work"
            mkdir_p(upper)
            mkdir_p(work)
            options = (f"lowerdir={':'.join(_escape(p) for p in reversed(lowers))},"
                       f"upperdir={_escape(upper)},workdir={_escape(work)}")
        linux.mount("overlay", target, "overlay", MS_RDONLY if self.read_only else 0, options)


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")
