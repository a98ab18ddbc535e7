"""nspawnpyctl checkconfig: placeholder until the full implementation lands."""
HELP = "check what this host can do"


def add_arguments(parser, verb) -> None:
    pass


def run(args) -> int:
    return 1
