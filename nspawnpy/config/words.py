"""systemd's word splitting (extract_first_word) and C escapes (cunescape) on Python
strings: the value syntax of many .nspawn keys and of --setenv/--system-call-filter lists.

Runs in: the host side, before anything is set up.
"""

WHITESPACE = " \t\n\r"


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
    return _Word(s, i, seps, unquote, unescape, retain_escape, unescape_separators,
                 dont_coalesce).extract()


class _Word:
    """One extract_first_word() scan over `s` from `i` (see there for the flags)."""

    def __init__(self, s, i, seps, unquote, unescape, retain_escape, unescape_separators,
                 dont_coalesce):
        self.s, self.i, self.n, self.seps = s, i, len(s), seps
        self.unquote, self.unescape, self.retain_escape = unquote, unescape, retain_escape
        self.unescape_separators, self.dont_coalesce = unescape_separators, dont_coalesce
        self.buf, self.raw, self.quote = [], False, None

    def extract(self):
        while True:
            if self.quote is not None:
                if self._quoted():
                    continue
            else:
                step = self._plain()
                if step == "end":
                    break
                if step == "quote":
                    continue
                if step != "escape":
                    return step
            self._escape()
        return self._word(), None

    def _word(self) -> str:
        w = "".join(self.buf)
        return _rebyte(w) if self.raw else w

    def _quoted(self) -> bool:
        """Inside quotes: True once the quote closed, False at a backslash."""
        s, i, j = self.s, self.i, self.i
        while True:
            if i >= self.n:
                raise ValueError("unbalanced quotes")
            c = s[i]
            if c == self.quote or (c == "\\" and not self.retain_escape):
                break
            i += 1
        self.buf.append(s[j:i])
        self.i = i
        if c == self.quote:
            self.quote = None
            self.i += 1
            return True
        return False

    def _plain(self):
        """Outside quotes: "end", "quote" (one opened), "escape" (at a backslash), or the
        (word, rest) result at a separator."""
        s, i, j, n, seps = self.s, self.i, self.i, self.n, self.seps
        while i < n:
            c = s[i]
            if ((self.unquote and (c == '"' or c == "'"))
                    or (c == "\\" and not self.retain_escape) or c in seps):
                break
            i += 1
        self.buf.append(s[j:i])
        self.i = i
        if i >= n:
            return "end"
        if self.unquote and (c == '"' or c == "'"):
            self.quote = c
            self.i += 1
            return "quote"
        if c == "\\" and not self.retain_escape:
            return "escape"
        i += 1  # a separator ends the word
        if not self.dont_coalesce:
            while i < n and s[i] in seps:
                i += 1
            if i >= n:
                i = -1
        return self._word(), (None if i < 0 else s[i:])

    def _escape(self) -> None:
        """The backslash at s[i] and what it escapes."""
        s = self.s
        self.i += 1
        if self.i >= self.n:
            raise ValueError("trailing backslash" if self.quote is None else "unbalanced quotes")
        c = s[self.i]
        if self.unescape or self.unescape_separators:
            if self.unescape:
                j, b = _cunescape_one(s, self.i, self.buf)
                if j >= 0:
                    self.raw = self.raw or b
                    self.i = j
                    return
            if self.unescape_separators and c in self.seps:
                self.buf.append(c)
                self.i += 1
                return
            raise ValueError(f"invalid escape sequence '\\{c}'")
        self.buf.append(c)
        self.i += 1


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
