"""The payload's seccomp filters: nspawn's policy, the syscall groups and the compiled-filter
cache. Runs in PID 1 before pivot_root."""
