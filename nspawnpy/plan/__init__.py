"""The host side before clone: which tree, machine, user namespace, mounts, network,
journal and credentials a container gets, decided before any namespace exists."""
