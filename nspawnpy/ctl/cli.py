"""The command line of nspawnpyctl: one sub-command per verb module. The man page and the
bash completion are generated from the same parser (packaging/make-*.py)."""

import argparse
import importlib

from ..errors import UserError

VERBS = ("create", "list", "info", "attach", "stop", "remove", "enable", "disable", "checkconfig")
MODULES = {"disable": "enable"}   # one module serves both


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def verb_module(verb: str):
    return importlib.import_module(f"{__package__}.{MODULES.get(verb, verb)}")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="nspawnpyctl", description="Create, list, inspect, enter and stop "
                  "nspawnpy machines.")
    top.add_argument("--version", action="store_true", help="show the version and exit")
    verbs = top.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb in VERBS:
        module = verb_module(verb)
        help_text = getattr(module, f"HELP_{verb.upper()}", None) or module.HELP
        sub = verbs.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(sub, verb)
    return top


def add_json(sub) -> None:
    sub.add_argument("--json", choices=("pretty", "short", "off"), default="off",
                     help="print JSON (pretty: indented, short: one line)")
