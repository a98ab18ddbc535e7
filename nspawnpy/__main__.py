"""Entry point: parse → plan → run. The only place that turns errors into exit codes.

Runs in: the host side (the nspawnpy process, before it becomes the supervisor).
"""

import os
import sys

from .errors import UserError


def check_conflicts(s) -> None:
    """Combinations nspawn refuses, with its reasons."""
    pairs = [
        (s.directory and s.image, "--directory= and --image= may not be combined."),
        (s.template and s.ephemeral, "--ephemeral and --template= may not be combined."),
        (s.template and s.image, "--template= and --image= may not be combined."),
        (s.ephemeral and s.image, "--ephemeral and --image= may not be combined."),
        (s.boot and s.as_pid2, "--boot and --as-pid2 may not be combined."),
        (s.read_only and s.volatile != "no",
         "Cannot combine --read-only with --volatile. Note that --volatile already implies a "
         "read-only base hierarchy."),
        (s.ephemeral and s.volatile != "no", "Cannot combine --ephemeral with --volatile."),
        (s.ephemeral and s.link_journal in ("host", "guest"),
         "--ephemeral and --link-journal={host,guest} may not be combined."),
        (s.network_bridge and s.network_zone,
         "--network-bridge= and --network-zone= may not be combined."),
        (s.ports and not s.private_net and not s.network_namespace_path,
         "Cannot use --port= without private networking."),
        (s.network_namespace_path and s.private_net,
         "Cannot combine --network-namespace-path= with other network options."),
        (s.ambient_capability and s.boot, "AmbientCapability= setting is not useful for boot mode."),
        (s.keep_unit and (s.slice or s.property),
         "--keep-unit and --slice=/--property= may not be combined."),
        (s.user and s.boot, "--user= may not be combined with --boot."),
    ]
    for conflict, message in pairs:
        if conflict:
            raise UserError(message)
    unsupported = [
        (s.image, "--image="), (s.oci_bundle, "--oci-bundle="), (s.root_hash, "--root-hash="),
        (s.root_hash_sig, "--root-hash-sig="), (s.verity_data, "--verity-data="),
        (s.private_users not in ("no", None) and s.network_namespace_path,
         "--network-namespace-path= with --private-users="),
        (s.bind_user, "--bind-user="),
    ]
    for present, option in unsupported:
        if present:
            raise UserError(f"{option} is not supported by nspawnpy yet.")


def prepare(settings):
    """Resolve the tree, name and host-side plan; registers cleanups on the image, and
    runs them itself if preparing fails half-way (e.g. after the ephemeral layer exists)."""
    from .plan import tree as img
    image = img.Image()
    try:
        return _prepare(settings, image)
    except BaseException:
        for cleanup in reversed(image.cleanups):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - best effort; the original error matters
                pass
        raise


def _prepare(settings, image):
    from .supervisor import console
    from .plan import tree as img
    from .config import nspawnfile
    root = img.find_directory(settings)
    machine = settings.machine or img.default_machine_name(root)
    if settings.settings != "no":
        found = nspawnfile.find(machine, root)
        if found:
            nspawnfile.merge(settings, *found)
    check_conflicts(settings)
    if settings.template:
        from .plan.snapshot import populate_from_template
        populate_from_template(settings.template, root)
    img.check_tree(root, settings)
    image.root = os.path.realpath(root)
    image.lock_fd = img.lock_tree(image.root)
    if settings.ephemeral:
        from .plan.snapshot import ephemeral_layer
        image.ephemeral_dir = ephemeral_layer(image.root, image.cleanups)
        machine = f"{machine}-{os.urandom(8).hex()}"[:64]
    image.machine = machine
    if settings.private_users not in ("no", None):
        from .supervisor import userns
        image.userns = userns.resolve(settings, image.root, machine, image.cleanups)
    image.uuid = img.machine_id(image.root, settings.uuid)
    image.console_mode = console.choose_mode(settings.console)
    image.winsize = console.window_size() if image.console_mode == "interactive" else (24, 80)
    image.kept_caps = img.kept_capabilities(settings)
    image.custom_plan = custom_plan(settings, image)
    image.credentials = load_credentials(settings)
    read_only = settings.read_only or settings.volatile == "state"  # what /etc is on
    from .pid1.etcfiles import resolv_conf_step, timezone_step
    image.etc_steps = [step for step in (  # nspawn's order: /etc/localtime first
        timezone_step(settings.timezone, read_only),
        resolv_conf_step(settings.resolv_conf, settings.private_net, read_only)) if step]
    if settings.private_net or settings.network_namespace_path:
        from .supervisor.network import NetworkPlan, open_netns
        settings.machine = machine
        image.network_plan = NetworkPlan.from_settings(settings)
        if settings.network_namespace_path:
            image.netns_fd = open_netns(settings.network_namespace_path)
    if settings.register == "yes":
        from .supervisor.register import registration
        image.register = registration(settings, image)
        if getattr(image, "userns", None) is None:  # machinectl bind's tunnel (propagate.py)
            from .supervisor import propagate
            propagate.setup(image)
    from .plan.journal import link_journal  # host side now (last: nothing after it can fail)
    image.etc_steps += filter(None, [link_journal(settings, image)])
    return image


def custom_plan(settings, image) -> list:
    if not (settings.bind or settings.bind_ro or settings.tmpfs or settings.overlay
            or settings.overlay_ro or settings.inaccessible):
        return []
    from .pid1 import fsplan
    needs_scratch = any(src == "" for src, _, _ in settings.bind + settings.bind_ro) or any(
        "" in layers or (not ro and len(layers) > 1)
        for ro, specs in ((False, settings.overlay), (True, settings.overlay_ro))
        for layers, _ in specs)
    scratch = None
    if needs_scratch:
        import shutil
        import tempfile
        scratch = tempfile.mkdtemp(prefix="nspawnpy-", dir="/var/tmp")
        image.cleanups.append(lambda: shutil.rmtree(scratch, ignore_errors=True))
    return fsplan.custom_mounts(settings, scratch, image.cleanups)


def load_credentials(settings) -> list:
    credentials = list(settings.set_credential)
    for name, path in settings.load_credential:
        try:
            with open(path, "rb") as f:
                credentials.append((name, f.read()))
        except OSError as e:
            raise UserError(f"Failed to read credential '{name}' from {path}: {e.strerror}") from None
    return credentials


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from .config import cli
        settings = cli.parse_args(argv)
        if settings.help:
            sys.stdout.write(cli.help_text())
            return 0
        if settings.version:
            from . import __version__
            sys.stdout.write(f"nspawnpy {__version__} (systemd-nspawn 252 compatible)\n")
            return 0
        if os.geteuid() != 0:
            raise UserError("Need to be root.")
        image = prepare(settings)
        from .supervisor import loop as container
        return container.run(settings, image)
    except UserError as e:
        sys.stderr.write(f"{e.message}\n")
        return e.status
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
