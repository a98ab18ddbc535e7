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
    sub.add_argument("--json", choices=("pretty", "short", "off"), default="off", metavar="MODE",
                     help="print JSON (pretty: indented, short: one line)")


def describe() -> list:
    """[(verb, help, positionals, options)] for the man page and the completion, where an
    option is (spellings, metavar or None for a flag, choices or None, help)."""
    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    verbs = []
    for verb, p in sub.choices.items():
        positionals, options = [], []
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings:
                positionals.append((action.metavar or action.dest, action.nargs))
                continue
            takes_value = action.nargs != 0
            metavar = (action.metavar or action.dest.upper()) if takes_value else None
            options.append((tuple(action.option_strings), metavar, action.choices, action.help))
        verbs.append((verb, helps[verb], positionals, options))
    return verbs
