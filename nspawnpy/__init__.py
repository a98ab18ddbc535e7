"""nspawnpy: a systemd-nspawn compatible container manager in Python."""

__version__ = "0.1.0"
