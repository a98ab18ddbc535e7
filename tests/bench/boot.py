"""Booting a Debian guest to multi-user.

Both managers boot the same Debian bookworm tree (tests/rootfs.py's cached tarball) with
`-b --notify-ready=yes` and NOTIFY_SOCKET pointing at a datagram socket the bench listens on.
The guest's systemd sends READY=1 when start-up finished (default target reached); the
manager passes it on. The figure is the time from spawning the manager to that READY=1.
Then SIGTERM halts the guest (not timed). Boots are interleaved, after one warm-up boot each.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from testhost import ScratchCgroup

TIMEOUT_S = 120


def boot_once(argv: list[str], env: dict, label: str) -> dict:
    sockdir = tempfile.mkdtemp(prefix="nspawnpy-bench-notify-")
    path = os.path.join(sockdir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    cg = ScratchCgroup(label)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env={**env, "NOTIFY_SOCKET": path}, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=cg.enter)
    ready = None
    try:
        while ready is None and time.monotonic() - t0 < TIMEOUT_S and p.poll() is None:
            sock.settimeout(0.5)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in data.split(b"\n"):
                ready = time.monotonic() - t0
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(sockdir)
        cg.remove()
    return {"ready_s": ready, "status": p.returncode, "total_s": time.monotonic() - t0}


def bench_boot(nspawnpy_argv, nspawn_argv, tree: Path, env: dict, boots: int) -> dict:
    tools = (("nspawnpy", nspawnpy_argv), ("systemd-nspawn", nspawn_argv))
    runs: dict[str, list] = {name: [] for name, _ in tools}
    for i in range(boots + 1):  # the first round is a warm-up (machine-id, journal, caches)
        for name, make in tools if i % 2 == 0 else tools[::-1]:
            r = boot_once(make(tree, "-b", "--notify-ready=yes"), env, f"boot{name[0]}")
            if i:
                runs[name].append(r)
            if r["ready_s"] is None:
                return {"skipped": f"{name} sent no READY=1 (status {r['status']})"}
    res = {}
    for name, rs in runs.items():
        times = [r["ready_s"] for r in rs]
        res[name] = {"median_s": statistics.median(times), "min_s": min(times),
                     "all_s": [round(t, 3) for t in times],
                     "statuses": [r["status"] for r in rs]}
    a, b = res["nspawnpy"]["median_s"], res["systemd-nspawn"]["median_s"]
    res.update(unit="s to READY=1 (median)", value_nspawnpy=a, value_nspawn=b, ratio=a / b,
               ratio_min=res["nspawnpy"]["min_s"] / res["systemd-nspawn"]["min_s"])
    return res


def describe(res: dict) -> list[str]:
    out = []
    for name in ("nspawnpy", "systemd-nspawn"):
        v = res[name]
        out.append(f"boot {name}: READY=1 after median {v['median_s']:.2f} s, min "
                   f"{v['min_s']:.2f} s, runs {v['all_s']} s, exit statuses {v['statuses']}")
    out.append(f"boot: ratio of medians {res['ratio']:.2f}, of minima {res['ratio_min']:.2f}")
    return out
