"""nspawnpyctl: the life cycle of machines (create, list, info, attach, stop, remove,
enable/disable, checkconfig), beside the launcher as machinectl sits beside systemd-nspawn.
Each verb is a module with HELP, add_arguments(parser) and run(args) -> exit status.

Runs in: the nspawnpyctl process (attach also in the children it sends into a machine's
namespaces, see ctl/enter.py), never in the launcher."""
