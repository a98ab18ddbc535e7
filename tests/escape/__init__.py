"""The escape suite's probe (tests/test_escape.py): see probe.py.  Importing the package
registers every attempt in probe.ATTEMPTS."""

from . import kernel, mounts, processes  # noqa: F401
