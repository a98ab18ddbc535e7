"""The systemd INI dialect reader (nspawnpy.config.ini) and its word splitting (config.words)."""

import os
import random

import pytest

from nspawnpy.config.values import parse_boolean
from nspawnpy.errors import UserError
from nspawnpy.config.ini import Assignment, parse_unit_text, read_unit_file
from nspawnpy.config.words import cunescape, extract_first_word, split_words


def parse(text, sections=None):
    warnings = []
    result = parse_unit_text(text, "f.nspawn", warnings.append, sections=sections)
    return [(a.section, a.key, a.value, a.line) for a in result], warnings


# ------------------------------------------------------------------ structure

def test_simple_file_yields_assignments_in_order_with_line_numbers():
    got, warnings = parse("[Exec]\nBoot=yes\n\n[Network]\nPrivate=no\n")
    assert got == [("Exec", "Boot", "yes", 2), ("Network", "Private", "no", 5)]
    assert warnings == []


def test_assignment_knows_where_it_came_from():
    (a,) = parse_unit_text("[Exec]\nBoot=1\n", "/etc/systemd/nspawn/x.nspawn", [].append)
    assert a.where() == "/etc/systemd/nspawn/x.nspawn:2"
    assert a == Assignment("Exec", "Boot", "1", "/etc/systemd/nspawn/x.nspawn", 2)
    assert "Boot" in repr(a)


def test_hash_and_semicolon_lines_are_comments_even_when_indented():
    got, warnings = parse("# top\n; top\n[Exec]\n  # c\n\t; c\nBoot=yes\n")
    assert got == [("Exec", "Boot", "yes", 6)]
    assert warnings == []


def test_hash_later_in_a_line_belongs_to_the_value():
    got, _ = parse("[Exec]\nHostname=foo # not a comment\nUser=a;b\n")
    assert got == [("Exec", "Hostname", "foo # not a comment", 2), ("Exec", "User", "a;b", 3)]


def test_whitespace_around_equals_and_at_line_ends_is_stripped():
    got, _ = parse("  [Exec]  \n\t Hostname \t=\t foo bar \t\n")
    assert got == [("Exec", "Hostname", "foo bar", 2)]


def test_keys_and_sections_are_case_sensitive():
    got, _ = parse("[exec]\nboot=yes\n[Exec]\nBOOT=yes\n")
    assert got == [("exec", "boot", "yes", 2), ("Exec", "BOOT", "yes", 4)]


def test_empty_value_is_kept_as_empty_string():
    got, warnings = parse("[Exec]\nParameters=\nEnvironment=   \n")
    assert got == [("Exec", "Parameters", "", 2), ("Exec", "Environment", "", 3)]
    assert warnings == []


def test_value_may_contain_further_equals_signs():
    got, _ = parse("[Exec]\nEnvironment=A=b=c\n")
    assert got == [("Exec", "Environment", "A=b=c", 2)]


def test_repeated_sections_and_keys_are_all_returned_in_order():
    text = "[Exec]\nEnvironment=A=1\n[Files]\nBind=/a\n[Exec]\nEnvironment=B=2\nEnvironment=\n"
    got, _ = parse(text)
    assert got == [
        ("Exec", "Environment", "A=1", 2),
        ("Files", "Bind", "/a", 4),
        ("Exec", "Environment", "B=2", 6),
        ("Exec", "Environment", "", 7),
    ]


def test_crlf_line_endings_are_understood():
    got, warnings = parse("[Exec]\r\nBoot=yes\r\n\r\nHostname=h\r\n")
    assert got == [("Exec", "Boot", "yes", 2), ("Exec", "Hostname", "h", 4)]
    assert warnings == []


def test_lone_cr_and_nul_end_lines_like_systemd_read_line():
    got, _ = parse("[Exec]\rBoot=yes\n\rUser=u\0Hostname=h")
    assert got == [("Exec", "Boot", "yes", 2), ("Exec", "User", "u", 3), ("Exec", "Hostname", "h", 4)]


def test_missing_final_newline_is_fine():
    got, _ = parse("[Exec]\nBoot=yes")
    assert got == [("Exec", "Boot", "yes", 2)]


def test_utf8_byte_order_mark_is_skipped():
    got, warnings = parse("\ufeff[Exec]\nBoot=yes\n")
    assert got == [("Exec", "Boot", "yes", 2)]
    assert warnings == []


# --------------------------------------------------------------- continuation

def test_trailing_backslash_joins_the_next_line_with_a_space():
    got, _ = parse("[Exec]\nParameters=a \\\n  b\\\nc\n")
    assert got == [("Exec", "Parameters", "a    b c", 2)]


def test_comment_lines_inside_a_continuation_are_skipped():
    got, _ = parse("[Exec]\nParameters=a \\\n# comment\n; comment\n  b\nBoot=no\n")
    assert got == [("Exec", "Parameters", "a    b", 2), ("Exec", "Boot", "no", 6)]


def test_escaped_backslash_at_line_end_does_not_continue():
    got, _ = parse("[Exec]\nParameters=a\\\\\nBoot=no\n")
    assert got == [("Exec", "Parameters", "a\\\\", 2), ("Exec", "Boot", "no", 3)]


def test_empty_line_ends_a_continuation():
    got, _ = parse("[Exec]\nParameters=a\\\n\nBoot=no\n")
    assert got == [("Exec", "Parameters", "a", 2), ("Exec", "Boot", "no", 4)]


def test_continuation_at_end_of_file_is_still_parsed():
    got, _ = parse("[Exec]\nParameters=a\\")
    assert got == [("Exec", "Parameters", "a", 2)]


def test_line_numbers_after_a_continuation_stay_right():
    got, _ = parse("[Exec]\nA=1\\\n2\\\n3\nB=4\n")
    assert got == [("Exec", "A", "1 2 3", 2), ("Exec", "B", "4", 5)]


# ------------------------------------------------------------------- warnings

def test_assignment_before_any_section_is_warned_with_file_and_line():
    got, warnings = parse("\nBoot=yes\n[Exec]\nUser=u\n")
    assert got == [("Exec", "User", "u", 4)]
    assert warnings == ["f.nspawn:2: Assignment outside of section. Ignoring."]


def test_line_without_equals_is_warned_and_skipped():
    got, warnings = parse("[Exec]\nBoot\nUser=u\n")
    assert got == [("Exec", "User", "u", 3)]
    assert warnings == ["f.nspawn:2: Missing '=', ignoring line."]


def test_line_without_key_is_warned_and_skipped():
    got, warnings = parse("[Exec]\n = yes\n")
    assert got == []
    assert warnings == ["f.nspawn:2: Missing key name before '=', ignoring line."]


def test_invalid_section_header_rejects_the_file_like_systemd():
    with pytest.raises(UserError) as e:
        parse("[Exec]\nBoot=yes\n[Network\nPrivate=yes\n")
    assert str(e.value) == "f.nspawn:3: Invalid section header '[Network'"


def test_unknown_section_is_warned_once_and_its_keys_dropped_when_sections_are_given():
    got, warnings = parse("[Exec]\nBoot=1\n[Foo]\nA=1\nB=2\n[X-Mine]\nC=3\n[Files]\nBind=/x\n",
                          sections=("Exec", "Files", "Network"))
    assert got == [("Exec", "Boot", "1", 2), ("Files", "Bind", "/x", 9)]
    assert warnings == ["f.nspawn:3: Unknown section 'Foo'. Ignoring."]


def test_unknown_sections_pass_through_when_no_section_list_is_given():
    got, warnings = parse("[Foo]\nA=1\n")
    assert got == [("Foo", "A", "1", 2)]
    assert warnings == []


def test_line_over_one_mebibyte_rejects_the_file():
    with pytest.raises(UserError, match=r"f\.nspawn:2: Line too long"):
        parse("[Exec]\nA=" + "x" * (1 << 20) + "\n")


def test_line_just_under_the_limit_is_accepted():
    got, _ = parse("[Exec]\nA=" + "x" * ((1 << 20) - 2) + "\n")
    assert len(got[0][2]) == (1 << 20) - 2


def test_non_utf8_line_is_warned_and_skipped(tmp_path):
    f = tmp_path / "x.nspawn"
    f.write_bytes(b"[Exec]\nHostname=\xff\xfe\nBoot=yes\n")
    warnings = []
    got = read_unit_file(str(f), warnings.append)
    assert [(a.key, a.value) for a in got] == [("Boot", "yes")]
    assert warnings == [f"{f}:2: String is not UTF-8 clean, ignoring assignment: Hostname=\ufffd\ufffd"]


def test_default_warning_goes_to_stderr(capsys):
    parse_unit_text("Boot=yes\n", "g.nspawn")
    assert capsys.readouterr().err == "g.nspawn:1: Assignment outside of section. Ignoring.\n"


# ---------------------------------------------------------------- file access

def test_reading_a_file_reports_its_path_in_assignments(tmp_path):
    f = tmp_path / "m.nspawn"
    f.write_text("[Exec]\nBoot=yes\n")
    os.chmod(f, 0o644)
    warnings = []
    (a,) = read_unit_file(str(f), warnings.append)
    assert a.where() == f"{f}:2"
    assert warnings == []


def test_missing_file_becomes_a_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        read_unit_file(str(tmp_path / "nope.nspawn"))
    assert str(e.value) == f"Failed to read {tmp_path}/nope.nspawn: No such file or directory"
    assert e.value.status == 1


def test_executable_or_world_writable_file_is_warned_but_read(tmp_path):
    f = tmp_path / "m.nspawn"
    f.write_text("[Exec]\nBoot=yes\n")
    os.chmod(f, 0o757)
    warnings = []
    assert len(read_unit_file(str(f), warnings.append)) == 1
    assert [w.split(" is marked ")[1].split(".")[0] for w in warnings] == ["executable", "world-writable"]


# ------------------------------------------------------------------- booleans

@pytest.mark.parametrize("word", ["1", "yes", "y", "true", "t", "on", "YES", "True", "On", "Y", "T"])
def test_true_spellings_parse_as_true(word):
    assert parse_boolean(word) is True


@pytest.mark.parametrize("word", ["0", "no", "n", "false", "f", "off", "NO", "False", "oFF", "N", "F"])
def test_false_spellings_parse_as_false(word):
    assert parse_boolean(word) is False


@pytest.mark.parametrize("word", ["", "2", "yess", " yes", "yes ", "enable", "none", "-1", "ｙｅｓ"])
def test_anything_else_is_not_a_boolean(word):
    with pytest.raises(ValueError):
        parse_boolean(word)


# ---------------------------------------------------------------- split_words

@pytest.mark.parametrize("text, words", [
    ("", []),
    ("   \t ", []),
    ("a b\tc\n d", ["a", "b", "c", "d"]),
    ("a\x0bb", ["a\x0bb"]),                       # only space, tab, CR, LF separate
    ('"a b" c', ["a b", "c"]),
    ("'a \"b' c", ['a "b', "c"]),
    ('foo"bar baz"', ["foobar baz"]),
    ('foo"bar baz"qux x', ["foobar bazqux", "x"]),
    ('"" x', ["", "x"]),
    ("''", [""]),
    (r"a\sb", ["a b"]),
    (r"\a\b\f\n\r\t\v\\\"\'", ["\a\b\f\n\r\t\v\\\"'"]),
    (r"\x41\102\u00e9\U0001F600", ["AB\u00e9\U0001F600"]),
    (r"\xc3\xa9", ["\u00e9"]),                    # \x gives bytes, re-read as UTF-8
    (r'"a\"b" c', ['a"b', "c"]),
    (r"'\x41'", ["A"]),
])
def test_split_words_unquotes_and_unescapes(text, words):
    assert split_words(text) == words


@pytest.mark.parametrize("text", [
    '"abc', "'abc", 'a "b c', "abc\\", '"abc\\', r"\q", r"a\ b", r"\x4", r"\xzz", r"\x00",
    r"\000", r"\400", r"\08", r"\u12", r"\u0000", r"\U00110000", r"\UFFFFFFFF", r"\U0000D800",
])
def test_split_words_rejects_bad_quoting_and_escapes(text):
    with pytest.raises(ValueError):
        split_words(text)


def test_invalid_utf8_from_byte_escapes_is_kept_as_surrogate_escaped_bytes():
    (w,) = split_words(r"\xff")
    assert w.encode("utf-8", "surrogateescape") == b"\xff"


def test_split_words_can_keep_backslashes_like_config_parse_strv():
    assert split_words(r'a\nb "c d\x" e', retain_escape=True) == ["a\\nb", "c d\\x", "e"]


def test_split_words_with_flags_zero_keeps_quotes_and_drops_backslashes():
    assert split_words(r'"a b\c', unquote=False, unescape=False) == ['"a', "bc"]
    with pytest.raises(ValueError):
        split_words("a\\", unquote=False, unescape=False)


def test_split_words_on_custom_separator_without_coalescing():
    assert split_words("a::b:", ":", dont_coalesce=True) == ["a", "", "b", ""]
    assert split_words("a::b:", ":") == ["a", "b"]
    assert split_words(r"a\:b:c", ":", unescape=False, unescape_separators=True) == ["a:b", "c"]


def test_extract_first_word_returns_the_rest_for_the_caller():
    assert extract_first_word("/src:/dst:ro", ":", dont_coalesce=True) == ("/src", "/dst:ro")
    assert extract_first_word("  one two  ") == ("one", "two  ")
    assert extract_first_word("one   ") == ("one", None)
    assert extract_first_word("   ") == (None, None)


# ------------------------------------------------------------------ cunescape

def test_cunescape_decodes_every_supported_escape():
    assert cunescape(r"x\s\t\x41\101\u00e9\U0001F600\\y") == "x \tAA\u00e9\U0001F600\\y"
    assert cunescape("plain") == "plain"
    assert cunescape(r'"\"') == '""'


@pytest.mark.parametrize("text", ["\\", r"a\q", r"\x0", r"\777", r"\u00"])
def test_cunescape_rejects_bad_escapes(text):
    with pytest.raises(ValueError):
        cunescape(text)


# ------------------------------------------------------------- property tests

_ALPHABET = ['[', ']', '=', '#', ';', '\\', '"', "'", ' ', '\t', '\n', '\r', '\0', 'a', 'B',
             'x', 'u', 'U', '0', '7', 'f', 's', '\ufeff', '\u00e9', '\udcff', '\x0b', ':']
_SEEDS = ["[Exec]\nBoot=yes\nParameters=\"a b\" c\\\n# c\n d\n", "[Files]\r\nBind=/a:/b\r\n",
          "Environment='A=1' B=\\x41\n", "[Network]\nPort=tcp:80:8080\n;x\n"]


def _mutate(rng, text):
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randint(0, len(chars))
        if op < 0.5:
            chars.insert(pos, rng.choice(_ALPHABET))
        elif chars and op < 0.8:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(_ALPHABET)
    return "".join(chars)


def _random_texts(rng, count):
    for _ in range(count):
        if rng.random() < 0.5:
            yield "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40)))
        else:
            yield _mutate(rng, rng.choice(_SEEDS))


def test_parse_unit_text_never_fails_except_with_user_error_on_fuzzed_input():
    rng = random.Random(252)
    for text in _random_texts(rng, 4000):
        try:
            result = parse_unit_text(text, "fuzz", [].append)
        except UserError as e:
            assert str(e).startswith("fuzz:") and "Invalid section header" in str(e), repr(text)
            continue
        for a in result:
            assert a.key and a.key == a.key.strip(" \t") and a.value == a.value.strip(" \t\n\r")
            assert a.line >= 1


def test_split_words_only_ever_raises_value_error_on_fuzzed_input():
    rng = random.Random(4096)
    flag_sets = [{}, {"retain_escape": True}, {"unquote": False, "unescape": False},
                 {"separators": ":", "dont_coalesce": True, "unescape_separators": True}]
    for text in _random_texts(rng, 4000):
        for flags in flag_sets:
            try:
                words = split_words(text, **flags)
            except ValueError:
                continue
            assert all(isinstance(w, str) for w in words), repr(text)
        try:
            cunescape(text)
        except ValueError:
            pass
