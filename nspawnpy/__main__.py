"""Entry point: parse → plan → run. The only place that turns errors into exit codes.

Runs in: the host side (the nspawnpy process, before it becomes the supervisor).
"""

import os
import sys

from .errors import UserError


def main(argv=None) -> int:
    from .supervisor import signals
    signals.catch()  # first: a SIGTERM at any moment of set-up still ends in a full teardown
    argv = sys.argv[1:] if argv is None else argv
    try:
        from .config import cli
        settings = cli.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
