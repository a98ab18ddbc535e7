"""nspawnpyctl: the life cycle of machines (create, list, info, attach, stop, remove,
enable/disable, checkconfig), beside the launcher as machinectl sits beside systemd-nspawn.
Each verb is a module with HELP, add_arguments(parser) and run(args) -> exit status."""
