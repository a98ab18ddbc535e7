"""Reader for systemd's INI dialect as used by .nspawn files (config_parse() semantics).

The reader only splits a file into (section, key, value) assignments with their
file:line; it never interprets values (config/values.py does). The word splitting
with quoting and C escapes that many values use lives here too.

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

from nspawnpy.errors import UserError

WHITESPACE = " \t\n\r"
LONG_LINE_MAX = 1 << 20  # systemd's LONG_LINE_MAX: 1 MiB per (joined) line

__all__ = [
    "Assignment", "read_unit_file", "parse_unit_text",
    "split_words", "extract_first_word", "cunescape", "WHITESPACE",
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
    if warn is None:
        warn = _stderr_warn
    out = []
    append = out.append
    section = None
    section_ignored = False
    dirty = not _utf8_clean(text)

    def handle(l: str, line: int) -> None:
        nonlocal section, section_ignored
        l = l.strip(WHITESPACE)
        if not l:
            return
        if dirty and not _utf8_clean(l):
            shown = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in l)
            warn(f"{path}:{line}: String is not UTF-8 clean, ignoring assignment: {shown}")
            return
        if l[0] == "[":
            if l[-1] != "]":
                raise UserError(f"{path}:{line}: Invalid section header '{l}'")
            name = l[1:-1]
            if sections is not None and name not in sections:
                if not name.startswith("X-"):
                    warn(f"{path}:{line}: Unknown section '{name}'. Ignoring.")
                section = None
                section_ignored = True
            else:
                section = name
                section_ignored = False
            return
        if section is None:
            if not section_ignored:
                warn(f"{path}:{line}: Assignment outside of section. Ignoring.")
            return
        e = l.find("=")
        if e < 0:
            warn(f"{path}:{line}: Missing '=', ignoring line.")
            return
        if e == 0:
            warn(f"{path}:{line}: Missing key name before '=', ignoring line.")
            return
        append(Assignment(section, l[:e].rstrip(WHITESPACE), l[e + 1:].strip(WHITESPACE),
                          path, line))

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
            handle(p, cont_line)
        else:
            handle(p, lineno)
    if cont is not None:
        handle(cont, cont_line)
    return out


# ------------------------------------------------------------- value helpers



_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'", "s": " ",
}
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_OCTDIGITS = frozenset("01234567")


def _byte(v: int) -> str:
    # A raw byte from \xHH or \nnn: ASCII as is, others surrogate-escaped so that a
    # sequence of them can be re-decoded into the UTF-8 character it spells.
    return chr(v) if v < 0x80 else chr(0xDC00 + v)


def _unichar_ok(v: int) -> bool:
    return (v < 0x110000 and (v & 0xFFFFF800) != 0xD800
            and not 0xFDD0 <= v <= 0xFDEF and (v & 0xFFFE) != 0xFFFE)


def _cunescape_one(s: str, i: int, out: list):
    """Decode the escape whose letter is at s[i]; append to out; return
    (next index, raw bytes emitted) or (-1, False) if invalid."""
    c = s[i]
    r = _SIMPLE_ESCAPES.get(c)
    if r is not None:
        out.append(r)
        return i + 1, False
    if c == "x":
        h = s[i + 1:i + 3]
        if len(h) != 2 or not _HEXDIGITS.issuperset(h):
            return -1, False
        v = int(h, 16)
        if v == 0:
            return -1, False
        out.append(_byte(v))
        return i + 3, v >= 0x80
    if c in _OCTDIGITS:
        o = s[i:i + 3]
        if len(o) != 3 or not _OCTDIGITS.issuperset(o):
            return -1, False
        v = int(o, 8)
        if v == 0 or v > 255:
            return -1, False
        out.append(_byte(v))
        return i + 3, v >= 0x80
    if c == "u" or c == "U":
        k = 4 if c == "u" else 8
        h = s[i + 1:i + 1 + k]
        if len(h) != k or not _HEXDIGITS.issuperset(h):
            return -1, False
        v = int(h, 16)
        if v == 0 or (k == 8 and not _unichar_ok(v)):
            return -1, False
        if 0xD800 <= v <= 0xDFFF:  # \uD800: systemd emits the (invalid) UTF-8 bytes
            out.extend(_byte(b) for b in chr(v).encode("utf-8", "surrogatepass"))
            return i + 1 + k, True
        out.append(chr(v))
        return i + 1 + k, False
    return -1, False


def _rebyte(w: str) -> str:
    try:
        return w.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return w


def cunescape(s: str) -> str:
    """C-unescape a whole string (the escapes of split_words); ValueError on a bad one."""
    i = s.find("\\")
    if i < 0:
        return s
    out = []
    raw = False
    start = 0
    n = len(s)
    while i >= 0:
        out.append(s[start:i])
        if i + 1 >= n:
            raise ValueError("trailing backslash")
        j, b = _cunescape_one(s, i + 1, out)
        if j < 0:
            raise ValueError(f"invalid escape sequence '\\{s[i + 1]}'")
        raw = raw or b
        start = j
        i = s.find("\\", j)
    out.append(s[start:])
    w = "".join(out)
    return _rebyte(w) if raw else w


def extract_first_word(s, separators=None, *, unquote=True, unescape=True,
                       retain_escape=False, unescape_separators=False,
                       dont_coalesce=False):
    """systemd extract_first_word() on a Python string.

    Returns (word, rest): word is None when there is no further word; rest is
    None once the end is reached (feed a non-None rest back in for the next word).
    Flags map to EXTRACT_UNQUOTE, EXTRACT_CUNESCAPE, EXTRACT_RETAIN_ESCAPE,
    EXTRACT_UNESCAPE_SEPARATORS and EXTRACT_DONT_COALESCE_SEPARATORS; with all
    of them false, a backslash still makes the next character literal (flags 0).
    Raises ValueError on unbalanced quotes, a trailing backslash or a bad escape.
    """
    if s is None:
        return None, None
    seps = WHITESPACE if separators is None else separators
    n = len(s)
    i = 0
    while i < n and s[i] in seps:
        if dont_coalesce:
            return "", s[i + 1:]
        i += 1
    if i >= n:
        return ("" if dont_coalesce else None), None
    buf = []
    raw = False
    quote = None
    while True:
        if quote is not None:
            j = i
            while True:
                if i >= n:
                    raise ValueError("unbalanced quotes")
                c = s[i]
                if c == quote or (c == "\\" and not retain_escape):
                    break
                i += 1
            buf.append(s[j:i])
            if c == quote:
                quote = None
                i += 1
                continue
        else:
            j = i
            while i < n:
                c = s[i]
                if ((unquote and (c == '"' or c == "'"))
                        or (c == "\\" and not retain_escape) or c in seps):
                    break
                i += 1
            buf.append(s[j:i])
            if i >= n:
                break
            if unquote and (c == '"' or c == "'"):
                quote = c
                i += 1
                continue
            if c != "\\" or retain_escape:  # a separator ends the word
                i += 1
                if not dont_coalesce:
                    while i < n and s[i] in seps:
                        i += 1
                    if i >= n:
                        i = -1
                w = "".join(buf)
                return (_rebyte(w) if raw else w), (None if i < 0 else s[i:])
        # backslash at s[i]
        i += 1
        if i >= n:
            raise ValueError("trailing backslash" if quote is None else "unbalanced quotes")
        c = s[i]
        if unescape or unescape_separators:
            if unescape:
                j, b = _cunescape_one(s, i, buf)
                if j >= 0:
                    raw = raw or b
                    i = j
                    continue
            if unescape_separators and c in seps:
                buf.append(c)
                i += 1
                continue
            raise ValueError(f"invalid escape sequence '\\{c}'")
        buf.append(c)
        i += 1
    w = "".join(buf)
    return (_rebyte(w) if raw else w), None


def split_words(s: str, separators=None, *, unquote=True, unescape=True,
                retain_escape=False, unescape_separators=False,
                dont_coalesce=False) -> list:
    """All words of `s`, by default with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE semantics.

    `foo"bar baz"` is one word; `""` is an empty word. For config_parse_strv keys
    (Parameters=, Environment=) systemd v252 uses unquote + retain_escape
    (backslashes kept verbatim): call split_words(v, retain_escape=True).
    Raises ValueError with a short reason on unbalanced quotes or bad escapes.
    """
    if (separators is None and not dont_coalesce and "\\" not in s
            and (not unquote or ('"' not in s and "'" not in s))):
        return [w for w in s.replace("\t", " ").replace("\n", " ").replace("\r", " ").split(" ") if w]
    words = []
    rest = s
    while rest is not None:
        w, rest = extract_first_word(
            rest, separators, unquote=unquote, unescape=unescape,
            retain_escape=retain_escape, unescape_separators=unescape_separators,
            dont_coalesce=dont_coalesce)
        if w is None:
            break
        words.append(w)
    return words
