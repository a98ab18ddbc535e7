"""Run a command (systemd-nspawn -i ...) where systemd-nspawn 252 believes udev runs.

nspawn 252 refuses --image= unless it can connect to udev's control socket
(/run/udev/control); for a single file system image it needs nothing else from udev. This
host runs no udev, so the tests give nspawn, in a mount namespace of its own, a /run that
is the host's with an overlay on top holding a listening socket at /run/udev/control that
never answers. Usage: fakeudev.py COMMAND [ARGS...]; the exit status is the command's.
(The overlay is why nspawn's /run/host/incoming shows an overlay file system.)"""

import os
import socket
import subprocess
import sys

SCRIPT = """
set -e
mount --make-rslave /
scratch=$(mktemp -d /tmp/fakeudev-XXXXXX)
mount -t tmpfs tmpfs "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay overlay -o "lowerdir=/run,upperdir=$scratch/upper,workdir=$scratch/work" /run
umount -l "$scratch"
rmdir "$scratch"
exec "$@"
"""


def serve_and_run(argv: list[str]) -> int:
    """In the prepared namespace: bind the socket, run the command, return its status."""
    del os.environ["FAKEUDEV_INSIDE"]
    os.makedirs("/run/udev", exist_ok=True)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    control.bind("/run/udev/control")
    control.listen(8)
    return subprocess.run(argv).returncode


def main() -> int:
    if os.environ.get("FAKEUDEV_INSIDE") == "1":
        return serve_and_run(sys.argv[1:])
    env = {**os.environ, "FAKEUDEV_INSIDE": "1"}
    return subprocess.run(["unshare", "-m", "sh", "-c", SCRIPT, "sh", sys.executable,
                           os.path.abspath(__file__), *sys.argv[1:]], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
