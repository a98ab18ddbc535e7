"""The supervisor (the nspawnpy process after clone) and the helpers it forks: the event
loop, console relay, notify, cgroups, network links, port watcher, nftables, machined,
the propagation tunnel, the cleanups and the janitor.

With --keep-unit the supervisor has two images, one after the other, in the same process:
the set-up image (loop.py: PID 1's start, the host side, the loop's first second) and, once
the container has settled, the slim supervisor it execs into (handover.py, slim.py), which
runs only events.py's loop, signals, console, notify, janitor and cleanups:

  nspawnpy (set-up image) --clone--> PID 1 --exec--> payload
      |--fork--> janitor (the set-up image's copy)
      `--exec (same PID)--> nspawnpy (slim supervisor) --fork--> janitor (slim copy)
"""
