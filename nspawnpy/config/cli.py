"""Command-line parsing derived from the settings table, with getopt_long's rules:
options stop at the first non-option (nspawn's "+" mode), long options may be
abbreviated to a unique prefix, short options cluster (-bq), values attach
(-Dpath, --directory=path) or follow as the next word.

Runs in: the host side, before anything is set up.
"""

from ..errors import UserError
from .settings import Option, Settings, by_long, by_short, by_topic

PROGRAM = "nspawnpy"


def _bad_value(option: Option, spelled: str, value: str, reason: str) -> UserError:
    from .values import shown
    from .wording import PARSE_ERRORS
    if option.long in PARSE_ERRORS:   # nspawn's sentence for this option
        return UserError(_naming(option, PARSE_ERRORS[option.long].format(shown(value))))
    return UserError(f"Invalid value for {spelled}: '{shown(value)}': {shown(reason)}.")


def _naming(option: Option, sentence: str) -> str:
    """nspawn's sentence, followed by the option where the sentence does not name it
    (our rule: a bad value's error names its option)."""
    name = option.spelled()
    return sentence if name in sentence else f"{sentence} ({name}=)"


def _store(settings: Settings, option: Option, spelled: str, value) -> None:
    from . import helplists
    helplists.check(option.long, value)
    if option.kind == "flag" or value is None:
        parsed = option.const
    else:
        try:
            parsed = option.parse(value)
        except ValueError as e:
            from ..errors import WordedValueError
            if isinstance(e, WordedValueError):   # nspawn's own sentence
                raise UserError(_naming(option, str(e))) from None
            raise _bad_value(option, spelled, value, str(e)) from None
    settings.store(option, parsed)
    settings.cli_groups.add(option.group)


def _find_long(name: str) -> Option:
    table = by_long()
    if name in table:
        return table[name]
    matches = {o.long: o for n, o in table.items() if n.startswith(name)}
    if len(matches) == 1:
        return next(iter(matches.values()))
    from .values import shown
    if len(matches) > 1:
        raise UserError(f"{PROGRAM}: option '--{shown(name)}' is ambiguous; possibilities: "
                        + " ".join("--" + n for n in sorted(matches)))
    raise UserError(f"{PROGRAM}: unrecognized option '--{shown(name)}'")


def parse_args(argv: list[str]) -> Settings:
    settings = Settings()
    shorts = by_short()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
            option = _find_long(name)
            spelled = f"--{option.long}="
            if option.arg == "none":
                if has_value:
                    raise UserError(f"{PROGRAM}: option '--{option.long}' doesn't allow an argument")
                value = None
            elif option.arg == "required" and not has_value:
                i += 1
                if i >= len(argv):
                    raise UserError(f"{PROGRAM}: option '--{option.long}' requires an argument")
                value = argv[i]
            elif option.arg == "optional" and not has_value:
                value = None
            _store(settings, option, spelled, value)
            i += 1
            continue
        if arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                letter = arg[j]
                option = shorts.get(letter)
                if option is None:
                    from .values import shown
                    raise UserError(f"{PROGRAM}: invalid option -- '{shown(letter)}'")
                spelled = f"-{letter}"
                if option.arg == "none":
                    _store(settings, option, spelled, None)
                    j += 1
                    continue
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise UserError(f"{PROGRAM}: option requires an argument -- '{letter}'")
                    value = argv[i]
                _store(settings, option, spelled, value)
                break
            i += 1
            continue
        break
    if i < len(argv):
        settings.parameters = list(argv[i:])
        settings.cli_groups.add("start")
    return settings


def help_text() -> str:
    lines = [f"{PROGRAM} [OPTIONS...] [PATH] [ARGUMENTS...]", "",
             "Spawn a command or OS in a light-weight container.", ""]
    for topic, options in by_topic():
        lines.append(f"{topic}:")
        for option in options:
            lines.append(f"  {_spelling(option):<40} {option.help}")
    return "\n".join(lines) + "\n"


def _spelling(option: Option) -> str:
    names = ", ".join(filter(None, (f"-{option.short}" if option.short else None,
                                    f"--{option.long}" if option.long else None)))
    if option.arg == "required":
        names += f"={option.metavar or 'VALUE'}"
    elif option.arg == "optional":
        names += f"[={option.metavar or 'VALUE'}]"
    return names
