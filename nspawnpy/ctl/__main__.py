"""Entry point of nspawnpyctl: parse, run the verb, turn errors into one line and exit 1."""

import sys

from ..errors import UserError


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from . import cli
        args = cli.parser().parse_args(argv)
        if args.version:
            from .. import __version__
            sys.stdout.write(f"nspawnpyctl {__version__}\n")
            return 0
        if not args.verb:
            raise UserError("nspawnpyctl: a verb is needed (create, list, info, attach, stop, "
                            "remove, enable, disable, checkconfig); see --help.")
        return cli.verb_module(args.verb).run(args)
    except UserError as e:
        sys.stderr.write(f"{e.message}\n")
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
