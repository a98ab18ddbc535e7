"""nspawnpyctl create: placeholder until the full implementation lands."""
HELP = "create a machine tree"


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")


def run(args) -> int:
    return 1
