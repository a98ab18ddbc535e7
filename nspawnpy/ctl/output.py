"""Printing: aligned tables and key/value blocks for people, JSON for programs."""

import sys


def emit_json(value, mode: str) -> None:
    import json
    if mode == "pretty":
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")


def table(header: list, rows: list) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))
        sys.stdout.write(line.rstrip() + "\n")


def block(pairs: list) -> None:
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        sys.stdout.write(f"{(key + ':').ljust(width)} {value}\n")


def size(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.1f}{unit}" if unit != "B" else f"{n}B"
        n /= 1024
    return str(n)


def timestamp(usec) -> str:
    if not usec:
        return "-"
    import time
    return time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(usec / 1e6))
