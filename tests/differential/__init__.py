"""The differential harness against systemd-nspawn 252 (see test_differential.py)."""
