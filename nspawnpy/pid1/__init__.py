"""The container's PID 1, from clone() to exec(): set-up before pivot_root, the mount ops,
exec of the payload, the stub init and capabilities. Imports only the standard library,
nspawnpy.linux, nspawnpy.protocol and nspawnpy.pid1.* (after pivot_root nothing can be imported)."""
