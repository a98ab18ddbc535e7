"""Entry point: parse → plan → run. The only place that turns errors into exit codes.

Runs in: the host side (the nspawnpy process, before it becomes the supervisor); hands
the settled supervisor's exec over to supervisor/slim.py.
"""

import os
import sys

from .errors import UserError


def main(argv=None) -> int:
    from .supervisor import signals
    signals.catch()  # first: a SIGTERM at any moment of set-up still ends in a full teardown
    argv = sys.argv[1:] if argv is None else argv
    try:
        from .config import cli, helplists
        try:
            settings = cli.parse_args(argv)
        except helplists.ListRequested as listing:
            sys.stdout.write(listing.text)
            return 0
        if settings.help:
            sys.stdout.write(cli.help_text())
            return 0
        if settings.version:
            from . import __version__
            sys.stdout.write(f"nspawnpy {__version__} (systemd-nspawn 252 compatible)\n")
            return 0
        if os.geteuid() != 0:
            raise UserError("Need to be root.")
        from .plan.build import build
        plan = build(settings)
        from .supervisor import loop
        return loop.run(plan)
    except UserError as e:
        sys.stderr.write(f"{e.message}\n")
        return e.status
    except KeyboardInterrupt:
        return 1


def run_and_exit() -> None:
    """main(), then leave at once: the interpreter's own teardown (freeing every module
    and object one by one) is about 2 ms of every start and undoes nothing we need.
    The cyclic garbage collector is off until the container has started (the supervisor
    turns it on again): its passes over the objects the imports make cost ~1 ms of CPU."""
    if "NSPAWNPY_HANDOVER" in os.environ:  # the settled supervisor, exec'd: supervisor/slim.py
        from .supervisor.slim import resume
        resume()
    import gc
    gc.disable()
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
            pass
    os._exit(status)


if __name__ == "__main__":
    run_and_exit()
