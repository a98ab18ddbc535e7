"""Shared by the generators (make-manpage.py, make-completion.py): write the generated
files, or with --check say which committed ones are out of date."""

import sys


def write_or_check(pages, script: str, check: bool) -> int:
    """pages: [(path, text)]; returns the exit status."""
    status = 0
    for path, text in pages:
        if not check:
            with open(path, "w") as f:
                f.write(text)
            continue
        try:
            with open(path) as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            sys.stderr.write(f"{path} is out of date; run packaging/{script}\n")
            status = 1
    return status
