"""nspawnpyctl create NAME: a new machine tree in /var/lib/machines -- Debian or Ubuntu through
debootstrap, a small busybox system, or an import of a directory or tarball.

The tree is built in a hidden directory next to its final place and renamed into place
(without replacing anything) only when complete, so a failure half-way, or ^C, leaves
nothing behind."""

import os
import shutil
import subprocess

from . import state, trees
from ..errors import UserError

HELP = "create a machine: debootstrap Debian/Ubuntu, a busybox tree, or import a dir/tarball"
MACHINES = "/var/lib/machines"
RELEASES = {"debian": "bookworm", "ubuntu": "jammy"}


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--distribution", "-d", choices=("debian", "ubuntu", "busybox"),
                        help="what to install (default: debian, or the --from import)")
    parser.add_argument("--release", "-r", metavar="R",
                        help="release for debootstrap (default: bookworm, jammy for ubuntu)")
    parser.add_argument("--mirror", metavar="URL", help="archive to debootstrap from")
    parser.add_argument("--from", dest="source", metavar="DIR|TARBALL",
                        help="import this directory or tarball instead")


def run(args) -> int:
    state.require_root()
    name = state.check_name(args.name)
    if args.source and args.distribution:
        raise UserError("--from= and --distribution= may not be combined.")
    existing = state.find_tree(name) or next(
        (p for p in (os.path.join(MACHINES, name), os.path.join(MACHINES, name + ".raw"))
         if os.path.lexists(p)), None)
    if existing:
        raise UserError(f"Machine '{name}' already exists ({existing}).")
    os.makedirs(MACHINES, mode=0o700, exist_ok=True)
    scratch = trees.Scratch(MACHINES, name)
    try:
        build(args, scratch.path)
        scratch.commit(os.path.join(MACHINES, name))
    except BaseException:
        scratch.discard()
        raise
    print(f"Created machine {name} in {os.path.join(MACHINES, name)}.")
    if not args.source and args.distribution != "busybox":
        print("Root has no password: log in at the console (nspawnpy -b -M "
              f"{name}) and set one with passwd.")
    return 0


def build(args, dest: str) -> None:
    if args.source:
        trees.import_source(args.source, dest)
    elif args.distribution == "busybox":
        trees.busybox(dest)
    else:
        distribution = args.distribution or "debian"
        debootstrap(distribution, args.release or RELEASES[distribution], dest, args.mirror)
        trees.prepare_debian(dest)


def debootstrap(distribution: str, release: str, dest: str, mirror: str | None) -> None:
    """minbase plus systemd and dbus, so `nspawnpy -b` boots it; progress goes to the
    terminal as debootstrap prints it."""
    if not shutil.which("debootstrap"):
        raise UserError("debootstrap is not installed (apt-get install debootstrap).")
    if not os.path.exists(f"/usr/share/debootstrap/scripts/{release}"):
        raise UserError(f"debootstrap does not know release '{release}'.")
    if distribution == "ubuntu":
        keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
        if not os.path.exists(keyring):
            raise UserError(f"{keyring} is missing (apt-get install ubuntu-keyring).")
    mirror = mirror or trees.default_mirror(distribution)
    cmd = ["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus",
           release, dest, mirror]
    try:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    except KeyboardInterrupt:
        raise UserError("Interrupted; nothing was created.") from None
    if result.returncode != 0:
        raise UserError(f"debootstrap {release} from {mirror} failed (exit status "
                        f"{result.returncode}); nothing was created.")
