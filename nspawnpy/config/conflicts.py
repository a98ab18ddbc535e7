"""The combinations of settings nspawn refuses, with its wording, and those nspawnpy does
not support yet. Checked once the .nspawn file is merged, before anything is set up.

Runs in: the host side, before anything is set up.
"""

from ..errors import UserError


def check_conflicts(s) -> None:
    """Combinations nspawn refuses, with its reasons."""
    pairs = [
        (s.directory and s.image, "--directory= and --image= may not be combined."),
        (s.template and s.ephemeral, "--ephemeral and --template= may not be combined."),
        (s.template and s.image, "--template= and --image= may not be combined."),
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
        (s.network_namespace_path and s.network_options_beyond_private(),
         "--network-namespace-path= cannot be combined with other network options."),
        (s.ambient_capability and s.boot, "AmbientCapability= setting is not useful for boot mode."),
        (s.keep_unit and (s.slice or s.property),
         "--keep-unit and --slice=/--property= may not be combined."),
        (s.user and s.boot, "--user= may not be combined with --boot."),
        (s.bind_user and s.private_users in ("no", None), "--bind-user= requires --private-users"),
    ]
    for conflict, message in pairs:
        if conflict:
            raise UserError(message)
    _check_api_vfs(s)
    unsupported = [
        (s.root_hash, "--root-hash="),
        (s.root_hash_sig, "--root-hash-sig="), (s.verity_data, "--verity-data="),
    ]
    for present, option in unsupported:
        if present:
            raise UserError(f"{option} is not supported by nspawnpy yet.")


def _check_api_vfs(s) -> None:
    """What $SYSTEMD_NSPAWN_API_VFS_WRITABLE may not go with under -U: the host's
    /proc/sys/net and sysfs ("network" without a network namespace of its own), or any
    writable API file system."""
    from .environ import api_vfs_writable
    if s.private_users in ("no", None):
        return
    writable = api_vfs_writable()
    if writable == "network" and not s.private_net:
        raise UserError("Invalid namespacing settings. Mounting sysfs with --private-users "
                        "requires --private-network.")
    if writable is True:
        raise UserError("Cannot combine --private-users with read-write mounts.")
