"""Reader for systemd's INI dialect as used by .nspawn files (config_parse() semantics).

The reader only splits a file into (section, key, value) assignments with their
file:line; it never interprets values (config/values.py does, with the word splitting
and C escapes of config/words.py).

Behaviour follows systemd v252:
  * physical lines end at \\n, \\r, \\0 or any combination of distinct markers
    (\\r\\n, \\n\\r, \\r\\n\\0, ...); a physical line over 1 MiB is fatal;
  * a line whose first non-blank character is '#' or ';' is a comment, even in
    the middle of a continuation; there are no inline comments;
  * an odd number of trailing backslashes joins the next line, the backslash
    becoming a space; an empty line ends a continuation;
  * "[Name]" starts a section (repeatable); a line starting with '[' but not
    ending with ']' is fatal (UserError), as systemd refuses the whole file;
  * warnings (the line is skipped): assignment outside of a section, missing
    '=', missing key before '=', not UTF-8 clean, and - only when the caller
    passes `sections` - unknown section (its assignments are dropped silently).

Runs in: the host side, before anything is set up.
"""

import os
import sys

from nspawnpy.config.words import WHITESPACE
from nspawnpy.errors import UserError

LONG_LINE_MAX = 1 << 20  # systemd's LONG_LINE_MAX: 1 MiB per (joined) line

__all__ = [
    "Assignment", "read_unit_file", "parse_unit_text",
]


class Assignment:
    """One `Key=Value` line: values are stripped but otherwise uninterpreted."""

    __slots__ = ("section", "key", "value", "path", "line")

    def __init__(self, section: str, key: str, value: str, path: str, line: int):
        self.section = section
        self.key = key
        self.value = value
        self.path = path
        self.line = line  # line number where the (possibly continued) assignment starts

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def _astuple(self):
        return (self.section, self.key, self.value, self.path, self.line)

    def __eq__(self, other):
        if other.__class__ is not Assignment:
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self):
        return hash(self._astuple())

    def __repr__(self):
        return (f"Assignment(section={self.section!r}, key={self.key!r}, "
                f"value={self.value!r}, path={self.path!r}, line={self.line!r})")


def _stderr_warn(message: str) -> None:
    sys.stderr.write(message + "\n")


# ---------------------------------------------------------------- file reader

def read_unit_file(path: str, warn=None, *, sections=None) -> list:
    """Read and parse `path`. OSError becomes UserError("Failed to read PATH: reason")."""
    if warn is None:
        warn = _stderr_warn
    try:
        with open(path, "rb") as f:
            try:
                mode = os.fstat(f.fileno()).st_mode
            except OSError:
                mode = 0
            data = f.read()
    except OSError as e:
        raise UserError(f"Failed to read {path}: {e.strerror or e}") from None
    if mode & 0o170000 == 0o100000:  # regular file: same hints as systemd
        if mode & 0o111:
            warn(f"Configuration file {path} is marked executable. "
                 "Please remove executable permission bits. Proceeding anyway.")
        if mode & 0o002:
            warn(f"Configuration file {path} is marked world-writable. "
                 "Please remove world writability permission bits. Proceeding anyway.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
    return parse_unit_text(text, path, warn, sections=sections)


_EOL_RE = None


def _physical_lines(text: str) -> list:
    if "\r" not in text and "\0" not in text:
        lines = text.split("\n")
    else:
        global _EOL_RE
        if _EOL_RE is None:
            import re
            # Longest first: one line end is a run of distinct markers, NUL only last.
            _EOL_RE = re.compile("\n\r\0|\r\n\0|\n\r|\r\n|\n\0|\r\0|\n|\r|\0")
        lines = _EOL_RE.split(text)
    if lines[-1] == "":
        lines.pop()  # text ended with a line end (or was empty)
    return lines


def _too_long(s: str) -> bool:
    n = len(s)
    if n * 4 <= LONG_LINE_MAX:
        return False
    return n > LONG_LINE_MAX or len(s.encode("utf-8", "surrogatepass")) > LONG_LINE_MAX


def _utf8_clean(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_unit_text(text: str, path: str = "<string>", warn=None, *, sections=None) -> list:
    """Split `text` into Assignments, in file order.

    `sections`: optional collection of known section names. When given, other
    sections are warned about once ("Unknown section 'X'. Ignoring.", silent for
    "X-" names) and their assignments are dropped, like systemd's config_parse.
    """
    reader = _Sections(path, warn or _stderr_warn, sections, dirty=not _utf8_clean(text))
    for line, lineno in _logical_lines(text, path):
        reader.handle(line, lineno)
    return reader.assignments


def _logical_lines(text: str, path: str):
    """(line, number of its first physical line), comments dropped, continuations joined."""
    cont = None       # joined text of a continuation in progress
    cont_line = 0     # where it started
    bom_seen = False
    lineno = 0
    for raw in _physical_lines(text):
        lineno += 1
        if len(raw) * 4 > LONG_LINE_MAX and _too_long(raw):
            raise UserError(f"{path}:{lineno}: Line too long")
        s = raw.lstrip(WHITESPACE)
        if s and (s[0] == "#" or s[0] == ";"):
            continue
        if not bom_seen and raw[:1] == "\ufeff":
            raw = raw[1:]
            bom_seen = True
        if cont is not None:
            if len(cont) + len(raw) > LONG_LINE_MAX:
                raise UserError(f"{path}:{lineno}: Continuation line too long")
            p = cont + raw
        else:
            p = raw
        if p[-1:] == "\\" and (len(p) - len(p.rstrip("\\"))) % 2 == 1:
            if cont is None:
                cont_line = lineno
            cont = p[:-1] + " "
            continue
        if cont is not None:
            cont = None
            yield p, cont_line
        else:
            yield p, lineno
    if cont is not None:
        yield cont, cont_line


class _Sections:
    """Turns logical lines into Assignments, tracking the current [Section]."""

    def __init__(self, path: str, warn, sections, dirty: bool):
        self.path, self.warn, self.sections, self.dirty = path, warn, sections, dirty
        self.section = None
        self.section_ignored = False
        self.assignments = []

    def handle(self, l: str, line: int) -> None:
        path, warn = self.path, self.warn
        l = l.strip(WHITESPACE)
        if not l:
            return
        if self.dirty and not _utf8_clean(l):
            shown = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in l)
            warn(f"{path}:{line}: String is not UTF-8 clean, ignoring assignment: {shown}")
            return
        if l[0] == "[":
            self.header(l, line)
            return
        if self.section is None:
            if not self.section_ignored:
                warn(f"{path}:{line}: Assignment outside of section. Ignoring.")
            return
        e = l.find("=")
        if e < 0:
            warn(f"{path}:{line}: Missing '=', ignoring line.")
            return
        if e == 0:
            warn(f"{path}:{line}: Missing key name before '=', ignoring line.")
            return
        self.assignments.append(Assignment(self.section, l[:e].rstrip(WHITESPACE),
                                           l[e + 1:].strip(WHITESPACE), path, line))

    def header(self, l: str, line: int) -> None:
        if l[-1] != "]":
            raise UserError(f"{self.path}:{line}: Invalid section header '{l}'")
        name = l[1:-1]
        if self.sections is not None and name not in self.sections:
            if not name.startswith("X-"):
                self.warn(f"{self.path}:{line}: Unknown section '{name}'. Ignoring.")
            self.section, self.section_ignored = None, True
        else:
            self.section, self.section_ignored = name, False
