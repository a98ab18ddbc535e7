"""The container's PID 1, from clone() to exec(): set-up before pivot_root, the mount ops,
exec of the payload, the stub init and capabilities. Imports only the standard library,
nspawnpy.linux, nspawnpy.errors, nspawnpy.protocol and nspawnpy.pid1.* (tests/test_layout.py):
after pivot_root nothing can be imported, and the supervisor's libraries stay out."""
