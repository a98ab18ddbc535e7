"""The supervisor (the nspawnpy process after clone) and the helpers it forks: the event
loop, console relay, notify, cgroups, network links, port watcher, nftables, machined,
the propagation tunnel and the janitor."""
