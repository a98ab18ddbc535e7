"""The payload's seccomp filters: nspawn's policy, the syscall groups and the compiled-filter
cache. Runs on the host side before clone; PID 1 only loads the result (pid1/seccomp_load.py)."""
