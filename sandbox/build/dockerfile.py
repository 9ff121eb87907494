"""The Dockerfile front end: text -> stages of instructions, and BuildKit's ``$VAR`` word expansion.

Pure Python, no I/O.  It follows what BuildKit's Dockerfile frontend (``frontend/dockerfile/parser``,
``instructions`` and ``shell``) accepts, rule for rule:

* **Physical lines -> instructions.**  A line ending in the escape character (``\\``, or `````` after
  ``# escape=```` ``) followed only by blanks continues on the next line.  ``#`` at the start of a line
  (after blanks) makes a comment, also between continued lines, where it is dropped; blank lines inside a
  continuation are skipped (with a warning, as Docker does).  Leading blanks are ignored.
* **Parser directives** (``# escape=``, ``# syntax=``, ``# check=``; names case-insensitive) count only
  before the first other line of any kind (an empty line, a comment or an instruction ends them); each
  may appear once.  ``syntax`` and ``check`` are recorded and otherwise ignored.
* **Instructions** are case-insensitive.  ``--name=value`` flags come first; each instruction accepts
  only its own (see :data:`FLAGS`).  RUN, CMD, ENTRYPOINT and SHELL take a JSON array (exec form) or a
  string (shell form); text that starts with ``[`` but is not valid JSON is the shell form, as in
  Docker, while a valid JSON array of non-strings is an error.  COPY, ADD and VOLUME take a JSON array
  or whitespace-separated words.  ENV and LABEL take ``k=v`` words (quotes and escapes kept for
  :func:`expand` to process) or the legacy ``ENV key value with spaces``.
* **Heredocs** (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, ``3<<EOF``, several per line) on RUN, COPY and ADD
  (also under ONBUILD, not in the exec form) read the lines after the instruction up to the delimiter;
  see :class:`Heredoc`, :func:`shell_command`, :attr:`Instruction.sources`.
* **Stages**: global ARGs may precede the first FROM; every other instruction belongs to a stage.

Variable expansion depends on build state, so it is not applied here: the builder calls :func:`expand`
(or :func:`expand_words`, :func:`expand_heredoc`) with the env/args in scope, for the instructions in
:data:`EXPANDED` and the flags in :data:`EXPANDED_FLAGS`.

Every error is a :class:`~sandbox.errors.UsageError` whose message starts with ``NAME:LINE:`` (the
Dockerfile's name and the 1-based line where the instruction starts), e.g.
``Dockerfile:12: unknown instruction: FOOBAR``.

Where this is stricter than BuildKit, on purpose (each only refuses files that could not build anyway or
that Docker silently misreads): a bare RUN, CMD or ENTRYPOINT (and ``RUN []``) is refused; flags are
checked on every instruction (BuildKit ignores any given to STOPSIGNAL); an ONBUILD trigger is parsed and
checked now rather than when a child image triggers it; ``--mount`` values without ``$`` are checked at
parse time; errors come in file order (BuildKit parses the whole file before its instruction checks).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from sandbox.errors import UsageError

__all__ = [
    "Heredoc", "Instruction", "Stage", "Dockerfile", "parse", "expand", "expand_words", "split_words",
    "expand_heredoc", "shell_command", "healthcheck", "parse_duration", "parse_mount", "EXPANDED",
    "EXPANDED_FLAGS", "FLAGS", "INSTRUCTIONS", "parse_chmod", "check_signal", "parse_ports", "check_user",
]

#: Every instruction keyword the front end knows.
INSTRUCTIONS = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")

#: The flags each instruction accepts: ``str`` flags need ``=value``; ``bool`` flags may be bare
#: (``--link``) or ``=true``/``=false``; ``tuple`` flags may repeat and collect every value in order.
#: In :attr:`Instruction.flags` a flag that was given maps to a ``str``, ``bool`` or ``tuple[str, ...]``.
FLAGS: dict[str, dict[str, type]] = {
    "FROM": {"platform": str},
    "RUN": {"mount": tuple, "network": str, "security": str},
    "COPY": {"from": str, "chown": str, "chmod": str, "link": bool, "parents": bool, "exclude": tuple},
    "ADD": {"chown": str, "chmod": str, "link": bool, "keep-git-dir": bool, "checksum": str,
            "exclude": tuple, "unpack": bool},
    "HEALTHCHECK": {"interval": str, "timeout": str, "start-period": str, "start-interval": str,
                    "retries": str},
}

#: Instructions whose arguments Docker expands with :func:`expand` (each word, or for ENV/LABEL/ARG each
#: key and each value separately).  FROM expands with the global ARGs only.  RUN, CMD, ENTRYPOINT, SHELL,
#: HEALTHCHECK and ONBUILD are not expanded (a shell does it at run time, or the trigger's own build).
EXPANDED = frozenset({"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                      "VOLUME", "WORKDIR"})

#: Flag values Docker expands too (FROM ``--platform`` with the global ARGs).
EXPANDED_FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod", "checksum"}),
    "RUN": frozenset({"mount"}),
}

_HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
_NETWORKS = ("default", "none", "host")
_SECURITY = ("sandbox", "insecure")
_DIRECTIVES = ("escape", "syntax", "check")

# Go's regexp \s is [\t\n\f\r ]; BuildKit's reWhitespace is [\t\v\f\r ]+.
_DIRECTIVE_RE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_WS_RE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_RE = re.compile(r"(\d*)<<(-?)([^<]*)\Z")
_LEADING_TABS_RE = re.compile(r"^\t+", re.M)
_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9\-_.]*\Z")
_ONBUILD_RE = re.compile(r"^\s*ONBUILD\s*", re.I)
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0")


def _isspace(ch: str) -> bool:
    """Go's unicode.IsSpace (Python's str.isspace also counts \\x1c-\\x1f)."""
    return ch in _GO_SPACE or (ch > "\xff" and ch.isspace())


def _lstrip(s: str) -> str:
    i = 0
    while i < len(s) and _isspace(s[i]):
        i += 1
    return s[i:]


def _strip(s: str) -> str:
    s = _lstrip(s)
    j = len(s)
    while j and _isspace(s[j - 1]):
        j -= 1
    return s[:j]


# ---------------------------------------------------------------------------------------------- data model

@dataclass(frozen=True)
class Heredoc:
    """One here-document attached to an instruction.

    ``name``     the delimiter with quotes removed (``EOF`` for ``<<"EOF"``); for COPY/ADD it is also the
                 file name the content gets.
    ``content``  the lines between the instruction and the delimiter line, each with its newline; for
                 ``<<-`` the leading tabs of every line are already removed.
    ``expand``   False when (part of) the delimiter was quoted: the content is then taken literally.
    ``chomp``    True for ``<<-``.
    ``fd``       the file descriptor written before ``<<`` (``3<<EOF``), None when none was.
    ``word``     the heredoc word exactly as on the instruction line (``<<-"EOF"``).
    """
    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int | None = None
    word: str = ""


@dataclass(frozen=True)
class Instruction:
    """One instruction (a logical line, plus its heredoc bodies).

    ``cmd``        the keyword, upper case (``RUN``).
    ``line``       1-based number of the instruction's first physical line; ``end_line`` its last
                   (heredoc bodies included).
    ``args``       the arguments, unexpanded, by instruction:
                   RUN/CMD/ENTRYPOINT/SHELL: the JSON strings (``json_form``) or one string, the command
                   text of the shell form; COPY/ADD: the sources then the destination (heredoc words kept
                   as written, see :attr:`sources`); ENV/LABEL: ``"key=value"`` per pair (see
                   :attr:`pairs`); ARG: ``"NAME"`` or ``"NAME=default"`` words; FROM: ``(image,)`` or
                   ``(image, "AS", name)``; EXPOSE/VOLUME: the words; WORKDIR/USER/STOPSIGNAL/MAINTAINER:
                   one string, the rest of the line; HEALTHCHECK: ``("NONE",)`` or ``("CMD", *command)``
                   with ``json_form`` telling the command's form; ONBUILD: one string, the trigger's text
                   (what goes into the image config's OnBuild list).
    ``flags``      the ``--flags`` given: name (without ``--``) -> str, bool, or tuple for repeatable ones.
    ``json_form``  True for the exec (JSON array) form.
    ``heredocs``   the heredocs, in order of their words on the line.
    ``original``   the logical line (continuations joined, comments dropped), without heredoc bodies.
    ``trigger``    for ONBUILD, the wrapped instruction (parsed and checked); None otherwise.
    """
    cmd: str
    line: int
    args: tuple[str, ...] = ()
    flags: dict = field(default_factory=dict)
    json_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""
    end_line: int = 0
    trigger: Instruction | None = None

    @property
    def pairs(self) -> tuple[tuple[str, str | None], ...]:
        """ENV/LABEL: ``(key, value)`` pairs; ARG: ``(name, default or None)``; unexpanded."""
        out = []
        for a in self.args:
            k, eq, v = a.partition("=")
            out.append((k, v if eq or self.cmd != "ARG" else None))
        return tuple(out)

    @property
    def sources(self) -> tuple[str | Heredoc, ...]:
        """COPY/ADD: the sources in order, a :class:`Heredoc` in place of each heredoc word."""
        docs = iter(self.heredocs)
        out: list[str | Heredoc] = []
        for a in self.args[:-1]:
            doc = next(docs, None) if not self.json_form and _heredoc_word(a) is not None else None
            out.append(a if doc is None else doc)
        return tuple(out)

    @property
    def dest(self) -> str:
        """COPY/ADD: the destination (last argument), unexpanded."""
        return self.args[-1]


@dataclass(frozen=True)
class Stage:
    """A build stage: a FROM and the instructions after it.

    ``index``         0-based position in the file.
    ``name``          the ``AS`` name, lower case, or None.
    ``base``          the image expression after FROM, unexpanded (expand it with the global ARGs; it may
                      name an earlier stage, or be ``scratch``).
    ``platform``      FROM's ``--platform`` value, unexpanded, or None.
    ``instructions``  the instructions of the stage, FROM excluded.
    ``line``          the FROM's line.
    ``from_``         the FROM instruction itself.
    """
    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: tuple[Instruction, ...]
    line: int
    from_: Instruction | None = None


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile.

    ``name``         the name used in error messages (``Dockerfile``).
    ``stages``       the build stages, in order.
    ``global_args``  the ARG instructions before the first FROM (their values are visible to FROM lines,
                     and inside a stage only after a bare ``ARG NAME`` re-declares them).
    ``escape``       the escape character (``\\`` or `````), to pass to :func:`expand`.
    ``directives``   the parser directives found (``{"syntax": "docker/dockerfile:1"}``), names lower case.
    ``warnings``     ``NAME:LINE: text`` lines for things Docker accepts but warns about.
    """
    name: str
    stages: tuple[Stage, ...]
    global_args: tuple[Instruction, ...] = ()
    escape: str = "\\"
    directives: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def stage(self, ref: str | int, *, before: int | None = None) -> Stage | None:
        """The stage named ``ref`` (case-insensitive) or at index ``ref`` (an int or a decimal string), among
        the stages before index ``before`` when given (FROM and ``COPY --from`` may only name an earlier
        stage); None if there is none, so that the caller can treat ``ref`` as an image."""
        stages = self.stages if before is None else self.stages[:max(before, 0)]
        if isinstance(ref, int):
            return stages[ref] if 0 <= ref < len(stages) else None
        low = ref.lower()
        for st in stages:
            if st.name is not None and st.name == low:
                return st
        if ref.isdecimal() and ref.isascii():
            i = int(ref)
            if i < len(stages):
                return stages[i]
        return None

    def target(self, ref: str | int | None = None) -> Stage:
        """The stage ``--target`` names (by name or index); the last stage when ``ref`` is None or empty.
        Raises :class:`UsageError` if there is no such stage."""
        if ref is None or ref == "":
            return self.stages[-1]
        st = self.stage(ref)
        if st is None:
            names = [s.name for s in self.stages if s.name]
            hint = (f"the stages are named {', '.join(names)}; " if names else "no stage has a name; ") + \
                f"indexes run from 0 to {len(self.stages) - 1}"
            raise UsageError(f'{self.name}: target stage "{ref}" could not be found', hint=hint)
        return st


# --------------------------------------------------------------------------------------- BuildKit's shell lexer

class _LexError(Exception):
    pass


class _Words:
    """Word splitting of ProcessWords: unquoted blanks split, quoted text and escaped chars never do."""

    def __init__(self):
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _isspace(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.word += s
        self.in_word = True

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Lex:
    """A port of BuildKit's ``shell.Lex``: quotes, escapes and ``$VAR``/``${VAR...}`` in one word."""

    def __init__(self, src: str, env: Mapping[str, str], escape: str = "\\", *, raw_quotes: bool = False,
                 raw_escapes: bool = False, skip_unset: bool = False, skip_quotes: bool = False):
        self.s = src
        self.i = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.skip_quotes = skip_quotes

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def next(self) -> str | None:
        if self.i < len(self.s):
            self.i += 1
            return self.s[self.i - 1]
        return None

    def getenv(self, name: str) -> tuple[str, bool]:
        v = self.env.get(name)
        return ("", False) if v is None else (str(v), True)

    def process(self) -> tuple[str, list[str]]:
        return self.stop_on(None, self.raw_escapes)

    def stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            result: list[str] = []
            words = _Words()
            while (ch := self.peek()) is not None:
                if ch == stop:
                    self.next()
                    return "".join(result), words.get()
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch in "'\"" and not self.skip_quotes:
                    tmp = self.single_quote() if ch == "'" else self.double_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                else:
                    self.next()
                    if ch == self.escape:
                        if self.raw_escapes:
                            words.add_raw_char(ch)
                            result.append(ch)
                        ch = self.next()
                        if ch is None:
                            break
                        words.add_raw_char(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
            if stop is not None:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.get()
        finally:
            self.raw_escapes = saved

    def single_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.next()
            if ch is None:
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if ch is None:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt is None:
                    continue            # an escape at the very end is dropped
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
                elif self.raw_escapes:
                    continue
            out.append(ch)

    def name(self) -> str:
        out = []
        while (ch := self.peek()) is not None:
            if not out and ch.isdecimal():
                while (c := self.peek()) is not None and c.isdecimal():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()                                         # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.getenv(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()                                         # the {
        ch = self.peek()
        if ch is None:
            raise _LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch is None:
            raise _LexError("syntax error: missing '}'")
        if ch == "}":
            value, found = self.getenv(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        chs = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next() or ""
            chs += ch
        elif ch == "/":
            return self._replace(name)
        elif ch not in "+-?#%":
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        raw = ch in ("#", "%")
        if null_is_unset and raw:
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        try:
            word, _ = self.stop_on("}", raw)
        except _LexError:
            if self.peek() is None:
                raise _LexError("syntax error: missing '}'") from None
            raise
        value, found = self.getenv(name)
        if self.skip_unset and not found:
            return "${" + name + chs + word + "}"
        if ch == "-":
            return word if not found or (null_is_unset and value == "") else value
        if ch == "+":
            return "" if not found or (null_is_unset and value == "") else word
        if ch == "?":
            if not found:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):
            greedy = word[:1] == ch
            if greedy:
                word = word[1:]
            return _trim_suffix(word, value, greedy) if ch == "%" else _trim_prefix(word, value, greedy)
        raise _LexError(f"unsupported modifier ({chs}) in substitution")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.stop_on("/", True)
        except _LexError:
            if self.peek() is None:
                raise _LexError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.stop_on("}", True)
        except _LexError:
            if self.peek() is None:
                raise _LexError("syntax error: missing '}'") from None
            raise
        value, found = self.getenv(name)
        if self.skip_unset and not found:
            return "${%s/%s/%s}" % (name, pattern, replacement)
        rx = _pattern_regex(pattern, greedy=True, anchored=False)
        return rx.sub(lambda m: replacement, value, count=0 if replace_all else 1)


def _pattern_units(pattern: str) -> list[str]:
    """Split a shell pattern into units, an escape and its character being one unit."""
    units, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            units.append(pattern[i:i + 2])
            i += 2
        else:
            units.append(pattern[i])
            i += 1
    return units


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern:
    out = ["^"] if anchored else []
    for u in _pattern_units(pattern):
        if u == "*":
            out.append(".*" if greedy else ".*?")
        elif u == "?":
            out.append(".")
        elif u[0] == "\\":
            if len(u) == 1 or u[1] not in "*?\\}/":
                raise _LexError(f"invalid pattern ({pattern}) in substitution: invalid escape '{u}'")
            out.append(re.escape(u[1]))
        else:
            out.append(re.escape(u))
    return re.compile("".join(out), re.S)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end():] if m else value


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Regular expressions find leftmost matches, so reverse the pattern (escapes kept) and the value.
    rev = "".join(reversed(_pattern_units(pattern)))
    return _trim_prefix(rev, value[::-1], greedy)[::-1]


# ------------------------------------------------------------------------------------------------ expansion

def _lex(word: str, env: Mapping[str, str], escape: str, where: str | None, **kw) -> tuple[str, list[str]]:
    if escape not in ("\\", "`"):
        raise ValueError(f"escape must be \\ or `, not {escape!r}")
    try:
        return _Lex(word, env, escape, **kw).process()
    except _LexError as e:
        prefix = f"{where}: " if where else ""
        raise UsageError(f'{prefix}failed to process "{word}": {e}',
                         hint="quote or escape ($ with the escape character) what is not a variable") from None


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\", where: str | None = None) -> str:
    """Expand one Dockerfile word the way BuildKit does for ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL,
    USER, VOLUME, WORKDIR and ARG: quotes are removed (``'...'`` literal, ``"..."`` expands ``$``), the
    escape character escapes the next character (inside ``"..."`` only ``"``, ``$`` and itself), and

    ``$VAR`` ``${VAR}``                 the value, empty when unset;
    ``${VAR:-word}`` ``${VAR-word}``    word if VAR is unset or empty (``:-``) / unset (``-``);
    ``${VAR:+word}`` ``${VAR+word}``    word if VAR is set and non-empty / set, else empty;
    ``${VAR:?msg}`` ``${VAR?msg}``      an error if VAR is unset or empty / unset;
    ``${VAR#pat}`` ``${VAR##pat}``      the value without its shortest / longest prefix matching pat;
    ``${VAR%pat}`` ``${VAR%%pat}``      the same for suffixes (pat: ``*``, ``?``, ``\\`` escapes);
    ``${VAR/pat/repl}`` ``${VAR//pat/repl}``  the first / every match of pat replaced.

    ``env`` maps names to values (a name missing from it is unset).  ``escape`` is the Dockerfile's
    (:attr:`Dockerfile.escape`).  ``where`` (``"Dockerfile:7"``) prefixes error messages.  Raises
    :class:`UsageError` on an unterminated quote or a malformed ``${...}``."""
    return _lex(word, env, escape, where)[0]


def expand_words(words: Iterable[str], env: Mapping[str, str], *, escape: str = "\\",
                 where: str | None = None) -> list[str]:
    """:func:`expand` each of ``words`` (COPY/ADD sources and destination, EXPOSE, VOLUME) -- one word in,
    one word out: an expanded value with blanks in it is not split again, as in Docker."""
    return [expand(w, env, escape=escape, where=where) for w in words]


def split_words(text: str, env: Mapping[str, str], *, escape: str = "\\", where: str | None = None) -> list[str]:
    """Expand ``text`` and split it into words at unquoted blanks (BuildKit's ProcessWords); blanks that
    come out of a variable's value split too."""
    return _lex(text, env, escape, where)[1]


def expand_heredoc(heredoc: Heredoc, env: Mapping[str, str], *, where: str | None = None) -> str:
    """The content a COPY/ADD heredoc writes: its content as is when the delimiter was quoted, else with
    ``$VAR`` expanded the way BuildKit does it (quotes left alone, ``\\`` always the escape character, so
    ``\\$`` is a literal ``$`` and a backslash before any other character is dropped)."""
    if not heredoc.expand:
        return heredoc.content
    return _lex(heredoc.content, env, "\\", where, skip_quotes=True)[0]


# -------------------------------------------------------------------------------------------- logical lines

def _is_comment(s: str) -> bool:
    return _lstrip(s).startswith("#")


def _trim_newline(s: str) -> str:
    return s.rstrip("\r\n")


@dataclass
class _Node:
    """BuildKit's AST node for one logical line, before the instruction-level checks."""
    cmd: str                    # as written
    flags: list[str]
    rest: str
    args: list[str]
    json_form: bool
    sub: _Node | None
    original: str
    looks_json: bool = False    # starts with [ but is not valid JSON (taken as the shell form)


class _Parser:
    def __init__(self, text: str, name: str):
        self.name = name
        if text.startswith("\ufeff"):
            text = text[1:]
        parts = text.split("\n")
        self.lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        self.pos = 0
        self.directives: dict[str, str] = {}
        self.directives_done = False
        self.warnings: list[str] = []
        self._set_escape("\\", 0)

    # -- errors

    def err(self, line: int, msg: str, hint: str | None = None) -> UsageError:
        return UsageError(f"{self.name}:{line}: {msg}", hint=hint)

    # -- directives and continuation

    def _set_escape(self, token: str, line: int) -> None:
        if token not in ("\\", "`"):
            raise self.err(line, f"invalid escape token '{token}' does not match ` or \\",
                           hint="use # escape=\\ or # escape=`")
        self.escape = token
        e = re.escape(token)
        # A trailing escape continues the line unless it is itself escaped (BuildKit's regex).
        self.cont_re = re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")

    def _directive(self, token: str, line: int) -> None:
        if self.directives_done:
            return
        m = _DIRECTIVE_RE.match(token)
        if not m or m.group(1).lower() not in _DIRECTIVES:
            self.directives_done = True
            return
        key = m.group(1).lower()
        if key in self.directives:
            raise self.err(line, f"only one {key} parser directive can be used")
        self.directives[key] = m.group(2)
        if key == "escape":
            self._set_escape(m.group(2), line)

    def _trim_continuation(self, s: str) -> tuple[str, bool]:
        m = self.cont_re.search(s)
        if m:
            return s[:m.start()] + (m.group(1) or ""), False
        return s, True

    def _next_logical(self) -> tuple[int, int, str] | None:
        """The next instruction's (first line, last line, text) with continuations joined, or None."""
        while self.pos < len(self.lines):
            self.pos += 1
            start = self.pos
            token = _lstrip(_trim_newline(self.lines[start - 1]))
            self._directive(token, start)
            if _is_comment(token):
                token = ""
            line, eol = self._trim_continuation(token)
            if eol and line == "":
                continue
            empty_continuation = False
            while not eol and self.pos < len(self.lines):
                self.pos += 1
                token = _trim_newline(self.lines[self.pos - 1])
                self._directive(token, self.pos)
                if _is_comment(token):
                    continue
                if _lstrip(token) == "":
                    empty_continuation = True
                    continue
                cont, eol = self._trim_continuation(token)
                line += cont
            if empty_continuation:
                self.warnings.append(f"{self.name}:{start}: empty continuation line "
                                     "(Docker accepts it but says it will become an error)")
            return start, self.pos, line
        return None

    def _read_heredoc(self, doc: Heredoc, start: int) -> tuple[str, str]:
        """Consume the body of ``doc``: (content as used, raw content)."""
        raw = []
        while self.pos < len(self.lines):
            self.pos += 1
            text = self.lines[self.pos - 1]
            candidate = _trim_newline(text)
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                content = "".join(raw)
                if doc.chomp:
                    content = _LEADING_TABS_RE.sub("", content)
                return content, "".join(raw)
            raw.append(text)
        raise self.err(start, f"unterminated heredoc: no line {doc.name!r} ends the {doc.word} "
                              f"started here (file ends at line {self.pos})",
                       hint="end the heredoc with a line holding only its delimiter"
                            + (" (after tabs, for <<-)" if doc.chomp else ""))

    # -- the AST level (BuildKit's parser package)

    def node(self, line: str, lineno: int) -> _Node:
        s = _strip(line)
        parts = _WS_RE.split(s, maxsplit=1)
        cmd = parts[0]
        rest, flags = ("", [])
        if len(parts) == 2:
            rest, flags = _extract_flags(parts[1])
        rest = _strip(rest)
        n = _Node(cmd, flags, rest, [], False, None, line)
        low = cmd.lower()
        if low in ("add", "copy", "volume"):
            js = self._json(rest, lineno)
            if js is not None:
                n.args, n.json_form = js, True
            else:
                n.looks_json = _looks_json(rest)
                n.args = _WS_RE.split(rest) if rest else []
        elif low in ("cmd", "entrypoint", "run", "shell"):
            if rest:
                js = self._json(rest, lineno)
                if js is not None:
                    n.args, n.json_form = js, True
                else:
                    n.looks_json = _looks_json(rest)
                    n.args = [rest]
        elif low == "arg":
            n.args = _parse_words(rest, self.escape)
        elif low in ("env", "label"):
            n.args = self._name_val(rest, low.upper(), lineno)
        elif low in ("expose", "from"):
            n.args = _WS_RE.split(rest) if rest else []
        elif low in ("maintainer", "stopsignal", "user", "workdir"):
            n.args = [rest] if rest else []
        elif low == "healthcheck":
            if rest:
                sep = 0
                while sep < len(rest) and not _isspace(rest[sep]):
                    sep += 1
                typ, cmdtext = rest[:sep], _lstrip(rest[sep:])
                n.args = [typ]
                if cmdtext:
                    js = self._json(cmdtext, lineno)
                    if js is not None:
                        n.args += js
                        n.json_form = True
                    else:
                        n.looks_json = _looks_json(cmdtext)
                        n.args.append(cmdtext)
        elif low == "onbuild":
            if rest:
                n.sub = self.node(rest, lineno)
                n.args = [n.sub.cmd] + n.sub.args
        return n

    def _json(self, rest: str, lineno: int) -> list[str] | None:
        r = _lstrip(rest)
        if not r.startswith("["):
            return None
        try:
            value = json.loads(r, parse_constant=_reject_constant)
        except ValueError:
            return None                     # Docker: not JSON, so the shell form
        if not isinstance(value, list):
            return None
        if not all(isinstance(v, str) for v in value):
            raise self.err(lineno, "when using JSON array syntax, arrays must be comprised of strings only",
                           hint='write every element as a "string"')
        return value

    def _name_val(self, rest: str, key: str, lineno: int) -> list[str]:
        words = _parse_words(rest, self.escape)
        if not words:
            return []
        if "=" not in words[0]:
            parts = _WS_RE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise self.err(lineno, f"{key} must have two arguments", hint=f"write {key} name=value")
            return [parts[0] + "=" + parts[1]]
        for w in words:
            if "=" not in w:
                raise self.err(lineno, f'Syntax error - can\'t find = in "{w}". Must be of the form: name=value',
                               hint="quote values that contain blanks")
        return words

    # -- the instruction level (BuildKit's instructions package)

    def heredocs_for(self, n: _Node, start: int) -> list[tuple[Heredoc, str]]:
        target = n.sub if n.cmd.lower() == "onbuild" and n.sub is not None else n
        if target.cmd.upper() not in _HEREDOC_INSTRUCTIONS or target.json_form or "<<" not in n.original:
            return []
        out = []
        for word in _shell_words_raw(n.original):
            doc = _heredoc_word(word)
            if doc is not None:
                content, raw = self._read_heredoc(doc, start)
                out.append((Heredoc(doc.name, content, doc.expand, doc.chomp, doc.fd, doc.word), raw))
        return out

    def instruction(self, n: _Node, start: int, end: int, docs: list[tuple[Heredoc, str]]) -> Instruction:
        cmd = n.cmd.upper()
        E = lambda msg, hint=None: self.err(start, msg, hint)   # noqa: E731
        if cmd not in INSTRUCTIONS:
            close = _close_matches(cmd, INSTRUCTIONS, n=1)
            raise E(f"unknown instruction: {cmd}",
                    hint=f"did you mean {close[0]}?" if close else "instructions are " + ", ".join(INSTRUCTIONS))
        flags = self._flags(cmd, n.flags, start)
        args = list(n.args)
        heredocs = tuple(d for d, _ in docs)
        trigger = None
        if n.looks_json and cmd in ("RUN", "CMD", "ENTRYPOINT", "HEALTHCHECK", "COPY", "ADD", "VOLUME"):
            self.warnings.append(f"{self.name}:{start}: {cmd} arguments start with [ but are not a valid JSON "
                                 "array; Docker takes them as the shell form")

        if cmd == "FROM":
            if not (len(args) == 1 or (len(args) == 3 and args[1].lower() == "as")):
                raise E("FROM requires either one or three arguments", hint="write FROM image [AS name]")
            if len(args) == 3 and not _STAGE_NAME_RE.match(args[2].lower()):
                raise E(f'invalid name for build stage: "{args[2]}", name can\'t start with a number or '
                        "contain symbols", hint="stage names are [a-z][a-z0-9-_.]*")
        elif cmd == "RUN":
            if not args:
                raise E("RUN requires at least one argument")
            if "network" in flags and flags["network"] not in _NETWORKS:
                raise E(f'network mode "{flags["network"]}" not supported', hint="use " + ", ".join(_NETWORKS))
            if "security" in flags and flags["security"] not in _SECURITY:
                raise E(f'security "{flags["security"]}" is not valid', hint="use " + " or ".join(_SECURITY))
            for m in flags.get("mount", ()):
                try:
                    parse_mount(m)
                except UsageError as e:
                    raise E(e.msg, e.hint) from None
        elif cmd in ("CMD", "ENTRYPOINT"):
            if not args and not n.json_form:
                raise E(f"{cmd} requires at least one argument", hint=f"write {cmd} [] to clear it")
        elif cmd == "SHELL":
            if not args:
                raise E("SHELL requires at least one argument")
            if not n.json_form:
                raise E("SHELL requires the arguments to be in JSON form", hint='write SHELL ["/bin/sh", "-c"]')
        elif cmd in ("COPY", "ADD"):
            if len(args) < 2:
                raise E(f"{cmd} requires at least two arguments, but only one was provided. Destination "
                        "could not be determined.", hint=f"write {cmd} SRC... DEST")
            if not n.json_form and _heredoc_word(args[-1]) is not None:
                raise E(f"{cmd} cannot accept a heredoc as a destination")
        elif cmd in ("ENV", "LABEL"):
            if not args:
                raise E(f"{cmd} requires at least one argument", hint=f"write {cmd} name=value")
            if any(a.startswith("=") for a in args):
                raise E(f"{cmd} names can not be blank", hint=f"write {cmd} name=value")
        elif cmd == "ARG":
            if not args:
                raise E("ARG requires at least one argument", hint="write ARG NAME or ARG NAME=default")
            if any(a.startswith("=") for a in args):
                raise E("ARG names can not be blank")
        elif cmd in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
            if len(args) != 1:
                raise E(f"{cmd} requires exactly one argument")
        elif cmd in ("EXPOSE", "VOLUME"):
            if not args:
                raise E(f"{cmd} requires at least one argument")
            if cmd == "VOLUME":
                args = [_strip(a) for a in args]
                if "" in args:
                    raise E("VOLUME specified can not be an empty string")
        elif cmd == "HEALTHCHECK":
            if not args:
                raise E("HEALTHCHECK requires at least one argument", hint="write HEALTHCHECK NONE or "
                        "HEALTHCHECK [--interval=...] CMD command")
            typ = args[0].upper()
            args[0] = typ
            if typ == "NONE":
                if len(args) != 1:
                    raise E("HEALTHCHECK NONE takes no arguments")
            elif typ != "CMD":
                raise E(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
            elif len(args) == 1:
                raise E("Missing command after HEALTHCHECK CMD")
        elif cmd == "ONBUILD":
            if not args or n.sub is None:
                raise E("ONBUILD requires at least one argument")
            sub = n.sub.cmd.upper()
            if sub == "ONBUILD":
                raise E("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if sub in ("MAINTAINER", "FROM"):
                raise E(f"{sub} isn't allowed as an ONBUILD trigger")
            trigger = self.instruction(n.sub, start, end, docs)
            expression = _ONBUILD_RE.sub("", n.original, count=1)
            for doc, raw in docs:
                expression += "\n" + raw + doc.name
            args = [expression]
            heredocs = ()

        inst = Instruction(cmd=cmd, line=start, args=tuple(args), flags=flags, json_form=n.json_form,
                           heredocs=heredocs, original=_strip(n.original), end_line=end, trigger=trigger)
        if cmd == "HEALTHCHECK":
            try:
                healthcheck(inst)
            except UsageError as e:
                raise E(e.msg, e.hint) from None
        return inst

    def _flags(self, cmd: str, words: list[str], line: int) -> dict:
        spec = FLAGS.get(cmd, {})
        allowed = f"{cmd} accepts " + ", ".join("--" + f for f in spec) if spec else f"{cmd} takes no flags"
        out: dict = {}
        for w in words:
            if not w.startswith("--"):
                raise self.err(line, f"arg should start with -- : {w}")
            if w == "--":
                break
            name, eq, value = w[2:].partition("=")
            kind = spec.get(name)
            if kind is None:
                close = _close_matches(name, list(spec), n=1)
                raise self.err(line, f"unknown flag: --{name}",
                               hint=(f"did you mean --{close[0]}? " if close else "") + allowed)
            if name in out and kind is not tuple:
                raise self.err(line, f"duplicate flag specified: --{name}")
            if kind is bool:
                if eq and value == "":
                    raise self.err(line, f"missing a value on flag: --{name}")
                low = value.lower()
                if low not in ("", "true", "false"):
                    raise self.err(line, f"expecting boolean value for flag --{name}, not: {value}")
                out[name] = low != "false"
            else:
                if not eq:
                    raise self.err(line, f"missing a value on flag: --{name}", hint=f"write --{name}=VALUE")
                out[name] = out.get(name, ()) + (value,) if kind is tuple else value
        return out

    # -- the whole file

    def parse(self) -> Dockerfile:
        instructions: list[Instruction] = []
        while (logical := self._next_logical()) is not None:
            start, end, text = logical
            n = self.node(text, start)
            docs = self.heredocs_for(n, start)
            instructions.append(self.instruction(n, start, self.pos if docs else end, docs))
        if not instructions:
            raise self.err(max(len(self.lines), 1), "file with no instructions",
                           hint="a Dockerfile needs at least a FROM line")
        global_args: list[Instruction] = []
        stages: list[Stage] = []
        current: list[Instruction] | None = None
        head: Instruction | None = None

        def close():
            if head is not None:
                name = head.args[2].lower() if len(head.args) == 3 else None
                stages.append(Stage(len(stages), name, head.args[0], head.flags.get("platform"),
                                    tuple(current), head.line, head))

        names: dict[str, int] = {}
        for inst in instructions:
            if inst.cmd == "FROM":
                close()
                head, current = inst, []
                if len(inst.args) == 3:
                    name = inst.args[2].lower()
                    if name in names:
                        raise self.err(inst.line, f'duplicate stage name "{name}"',
                                       hint=f"the first stage named {name} starts at line {names[name]}")
                    names[name] = inst.line
            elif current is None:
                if inst.cmd != "ARG":
                    raise self.err(inst.line, f"no build stage in current context: {inst.cmd} comes before "
                                   "the first FROM", hint="only ARG may come before the first FROM")
                global_args.append(inst)
            else:
                current.append(inst)
        close()
        if not stages:
            raise self.err(max(len(self.lines), 1), "dockerfile contains no stages to build",
                           hint="add a FROM line after the global ARGs")
        return Dockerfile(self.name, tuple(stages), tuple(global_args), self.escape, dict(self.directives),
                          tuple(self.warnings))


def _looks_json(text: str) -> bool:
    """Text meant as a JSON array (``["...``) rather than, say, a shell test (``[ -f x ]``)."""
    return re.match(r'\[[\t\n\r ]*"', text) is not None


def _reject_constant(name: str):
    raise ValueError(name)      # Go's encoding/json has no NaN/Infinity


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Split leading ``--flag`` words (quotes and backslashes processed) off ``line``: (rest, flags)."""
    SPACES, WORD, QUOTE = 0, 1, 2
    words: list[str] = []
    phase, word, quote, blank_ok = SPACES, "", "", False
    i, n = 0, len(line)
    while i <= n:
        ch = line[i] if i < n else ""
        if phase == SPACES:
            if i == n:
                break
            if _isspace(ch):
                i += 1
                continue
            if ch != "-" or i + 1 == n or line[i + 1] != "-":
                return line[i:], words
            phase = WORD
        if i == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == WORD:
            if _isspace(ch):
                phase = SPACES
                if word == "--":
                    return line[i:], words
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, QUOTE
                i += 1
                continue
            if ch == "\\":
                if i + 1 == n:
                    i += 1
                    continue
                i += 1
                ch = line[i]
            word += ch
            i += 1
            continue
        # QUOTE
        if ch == quote:
            phase = WORD
            i += 1
            continue
        if ch == "\\":
            if i + 1 == n:
                phase = WORD
                i += 1
                continue
            i += 1
            ch = line[i]
        word += ch
        i += 1
    return "", words


def _parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's parseWords: split at unquoted blanks, keeping quotes and escapes in the words."""
    SPACES, WORD, QUOTE = 0, 1, 2
    words: list[str] = []
    phase, word, quote, blank_ok = SPACES, "", "", False
    i, n = 0, len(rest)
    while i <= n:
        ch = rest[i] if i < n else ""
        if phase == SPACES:
            if i == n:
                break
            if _isspace(ch):
                i += 1
                continue
            phase = WORD
        if i == n:
            if blank_ok or word:
                words.append(word)
            break
        if phase == WORD:
            if _isspace(ch):
                phase = SPACES
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, QUOTE
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        # QUOTE
        if ch == quote:
            phase = WORD
        if ch == escape and quote != "'":
            if i + 1 == n:
                phase = WORD
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    return words


def _shell_words_raw(line: str) -> list[str]:
    """The line's shell words with quotes and escapes kept and nothing expanded (heredoc detection)."""
    try:
        return _Lex(line, {}, "\\", raw_quotes=True, raw_escapes=True, skip_unset=True).process()[1]
    except _LexError:
        return []


def _heredoc_word(word: str) -> Heredoc | None:
    """The heredoc a word like ``<<EOF``, ``<<-'EOF'`` or ``3<<EOF`` opens (content empty), else None."""
    m = _HEREDOC_RE.match(word)
    if not m or not m.group(3):
        return None
    rest = m.group(3)
    try:
        words = _Lex(rest, {}, "\\", skip_unset=True).process()[1]
        raw = _Lex(rest, {}, "\\", skip_unset=True, raw_quotes=True).process()[1]
    except _LexError:
        return None
    if len(words) != 1 or len(raw) != 1:
        return None
    quotes = lambda s: s.count("'") + s.count('"')     # noqa: E731
    return Heredoc(name=words[0], content="", expand=quotes(words[0]) == quotes(raw[0]), chomp=m.group(2) == "-",
                   fd=int(m.group(1)) if m.group(1) else None, word=word)


# ------------------------------------------------------------------------------------------------ entry points

def parse(text: str | bytes, *, name: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile ``text`` into a :class:`Dockerfile` (stages, global ARGs, escape character).

    ``name`` is the file name error messages start with.  Raises :class:`UsageError`
    (``NAME:LINE: message``) for anything BuildKit refuses: an unknown instruction, missing or extra
    arguments, an unknown, repeated or valueless flag, a JSON array of non-strings, an instruction other
    than ARG before the first FROM, an unterminated heredoc, a bad parser directive, a duplicate stage name,
    a file with no instructions."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"{name}: not UTF-8 text (byte {e.start})") from None
    return _Parser(text, name).parse()


def shell_command(instr: Instruction) -> tuple[str, Heredoc | None]:
    """What a shell-form RUN hands to the shell, heredocs included, the way BuildKit does it:

    * no heredocs: ``(command text, None)``;
    * the command is one heredoc alone (``RUN <<EOF``): if its content starts with ``#!``,
      ``("", heredoc)`` -- write the content to an executable file and run it (its ``#!`` line picks the
      interpreter); otherwise ``(content, None)``, the content being the script;
    * otherwise (``RUN python3 <<EOF``, several heredocs): the command line followed by each body and its
      delimiter on their own lines, for the shell to feed as here-documents."""
    if instr.json_form or not instr.args:
        raise ValueError("shell_command wants a shell-form instruction")
    text = instr.args[0]
    if not instr.heredocs:
        return text, None
    if _heredoc_word(text) is not None:
        doc = instr.heredocs[0]
        if doc.content.startswith("#!"):
            return "", doc
        return doc.content, None
    for doc in instr.heredocs:
        text += "\n" + doc.content + doc.name
    return text, None


_DURATION_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_RE = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(s: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``1.5h``, ``500ms``, ``0``) in nanoseconds; ValueError if malformed."""
    orig = s
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{orig}"')
    from fractions import Fraction  # (imported here: a build that sets no HEALTHCHECK needs none)
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m or (not m.group(1) and not m.group(2)):
            if re.match(r"[\d.]+\Z", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{orig}"')
            raise ValueError(f'time: invalid duration "{orig}"')
        whole = int(m.group(1) or 0)
        frac = Fraction(int(m.group(2)), 10 ** len(m.group(2))) if m.group(2) else Fraction(0)
        total += (whole + frac) * _DURATION_UNITS[m.group(3)]
        pos = m.end()
    if total >= 2**63:
        raise ValueError(f'time: invalid duration "{orig}"')
    return sign * int(total)


def healthcheck(instr: Instruction) -> dict:
    """The image config ``Healthcheck`` a HEALTHCHECK instruction sets: ``{"Test": ["NONE"]}``, or
    ``{"Test": ["CMD", ...] or ["CMD-SHELL", text], "Interval": ns, "Timeout": ns, "StartPeriod": ns,
    "StartInterval": ns, "Retries": n}`` with the unset ones left out.  Raises :class:`UsageError` for a
    bad duration (under 1ms, other than 0) or retry count."""
    if instr.cmd != "HEALTHCHECK":
        raise ValueError(f"healthcheck wants a HEALTHCHECK instruction, not {instr.cmd}")
    typ = instr.args[0].upper()
    if typ == "NONE":
        return {"Test": ["NONE"]}
    test = ["CMD", *instr.args[1:]] if instr.json_form else ["CMD-SHELL", *instr.args[1:]]
    out: dict = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                      ("start-interval", "StartInterval")):
        v = instr.flags.get(flag, "")
        if v == "":
            continue
        try:
            d = parse_duration(v)
        except ValueError as e:
            raise UsageError(f"--{flag}: {e}", hint="durations look like 30s, 1m30s or 500ms") from None
        if d == 0:
            continue
        if d < 10**6:
            raise UsageError(f'Interval "{flag}" cannot be less than 1ms')
        out[key] = d
    r = instr.flags.get("retries", "")
    if r != "":
        if not re.fullmatch(r"[+-]?[0-9]+", r) or not -2**31 <= int(r) < 2**31:
            raise UsageError(f'strconv.ParseInt: parsing "{r}": invalid syntax', hint="--retries takes a number")
        if int(r) < 0:
            raise UsageError(f"--retries cannot be negative ({int(r)})")
        if int(r):
            out["Retries"] = int(r)
    return out


_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = {"type": "type", "from": "from", "source": "source", "src": "source", "target": "target",
               "dst": "target", "destination": "target", "dest": "target", "readonly": "readonly",
               "ro": "readonly", "readwrite": "readwrite", "rw": "readwrite", "id": "id", "sharing": "sharing",
               "required": "required", "mode": "mode", "uid": "uid", "gid": "gid", "size": "size", "env": "env"}


def _parse_bool(key: str, v: str) -> bool:
    low = v.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise UsageError(f"invalid value for {key}: {v}", hint="use true or false")


def parse_mount(value: str, env: Mapping[str, str] | None = None, *, escape: str = "\\") -> dict:
    """Parse one ``RUN --mount=`` value (comma-separated ``key=value`` fields, CSV quoting) into a dict
    with normalised keys: ``type`` (bind, cache, tmpfs, secret, ssh; default bind), ``from``, ``source``,
    ``target``, ``readonly`` (bool; by default False for cache and tmpfs, else True), ``id``, ``sharing``
    (shared, private, locked), ``required`` (bool), ``mode``/``uid``/``gid`` (int), ``size``, ``env``.

    With ``env`` the values are expanded first (as BuildKit does when it runs the step); without it, a
    value holding ``$`` is kept as written and not checked (the parser validates mounts this way).
    Raises :class:`UsageError`."""
    import csv
    try:
        fields = next(csv.reader([value]), [])
    except csv.Error as e:
        raise UsageError(f"failed to parse csv mounts: {e}") from None
    out: dict = {"type": "bind"}
    ro_auto = True
    for f in fields:
        key, eq, v = f.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                out["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                out["readonly"], ro_auto = False, False
            elif key == "required":
                out["required"] = True
            else:
                raise UsageError(f"invalid field '{f}' must be a key=value pair")
            continue
        norm = _MOUNT_KEYS.get(key)
        if norm is None:
            close = _close_matches(key, list(_MOUNT_KEYS), n=1)
            raise UsageError(f"unexpected key '{key}' in '{f}'", hint=f"did you mean {close[0]}?" if close else
                             "keys are " + ", ".join(sorted(set(_MOUNT_KEYS.values()))))
        if env is not None:
            v = expand(v, env, escape=escape)
        elif "$" in v:
            if norm == "from" and v.index("$") != len(v) - 1:
                raise UsageError("'from' doesn't support variable expansion, define alias stage instead")
            out[norm] = v
            continue
        if norm == "type":
            if v.lower() not in _MOUNT_TYPES:
                raise UsageError(f'unsupported mount type "{v}"', hint="use " + ", ".join(_MOUNT_TYPES))
            out["type"] = v.lower()
        elif norm == "readonly":
            out["readonly"], ro_auto = _parse_bool(key, v), False
        elif norm == "readwrite":
            out["readonly"], ro_auto = not _parse_bool(key, v), False
        elif norm == "required":
            out["required"] = _parse_bool(key, v)
        elif norm == "sharing":
            if v and v.lower() not in ("shared", "private", "locked"):
                raise UsageError(f"unsupported sharing value \"{v}\"", hint="use shared, private or locked")
            out["sharing"] = v.lower()
        elif norm in ("mode", "uid", "gid"):
            if not re.fullmatch(r"[0-7]+" if norm == "mode" else r"[0-9]+", v) or len(v) > 11:
                raise UsageError(f"invalid value for {key}: {v}",
                                 hint="mode is octal (0755), uid and gid are numbers")
            out[norm] = int(v, 8 if norm == "mode" else 10)
        else:
            out[norm] = v
    if ro_auto:
        out["readonly"] = out["type"] not in ("cache", "tmpfs")
    if out.get("sharing") and out["type"] != "cache":
        raise UsageError(f"invalid cache sharing set for {out['type']} mount")
    if out.get("required") and out["type"] not in ("secret", "ssh"):
        raise UsageError(f"unexpected key 'required' for mount type '{out['type']}'")
    if out["type"] == "secret":
        if "from" in out:
            raise UsageError("secret mount should not have a from")
        if not any(k in out for k in ("source", "target", "id", "env")):
            raise UsageError("invalid secret mount. one of source, target required")
    return out


# --- values Docker checks when it applies an instruction ------------------------------------------
# Each takes the expanded value and raises UsageError (no NAME:LINE: prefix; the caller adds it).

def parse_chmod(value: str) -> int:
    """A COPY/ADD ``--chmod`` value: octal 0 to 7777, as BuildKit takes it."""
    if re.fullmatch(r"[0-7]{1,4}|0[0-7]{4}", value) is None:
        raise UsageError(f"invalid --chmod value {value!r}",
                         hint="give the mode in octal, 0 to 7777, like --chmod=755 or --chmod=0644")
    return int(value, 8)


def check_signal(value: str) -> str:
    """A STOPSIGNAL value: a signal name (``SIGTERM`` or ``TERM``) or a number 1..64 -- what
    ``sbx stop`` can send.  Returns it unchanged."""
    import signal
    s = value.upper()
    if s.isdigit() and value.isascii():
        ok = 1 <= int(s) <= int(signal.SIGRTMAX)
    else:
        ok = isinstance(getattr(signal, s if s.startswith("SIG") else "SIG" + s, None), signal.Signals)
    if not ok:
        raise UsageError(f"invalid signal {value!r}",
                         hint=f"give a name such as SIGTERM or SIGINT, or a number 1 to {int(signal.SIGRTMAX)}")
    return value


_PROTOCOLS = ("tcp", "udp", "sctp")


def parse_ports(value: str) -> list[str]:
    """One EXPOSE word (``80``, ``80/udp``, ``8000-8002/tcp``) as the ``port/proto`` keys Docker stores
    (a range gives one key per port)."""
    port, slash, proto = value.partition("/")
    proto = proto.lower() if slash else "tcp"
    m = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", port)
    lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if not m or not 1 <= lo <= hi <= 65535:
        raise UsageError(f"invalid port {value!r} in EXPOSE",
                         hint="give a port or range from 1 to 65535, optionally with /tcp, /udp or /sctp: "
                              "EXPOSE 80 8000-8010/tcp 53/udp")
    if proto not in _PROTOCOLS:
        raise UsageError(f"invalid protocol {proto!r} in EXPOSE {value}", hint="use tcp, udp or sctp")
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


def check_user(value: str) -> str:
    """A USER value: ``user`` or ``user:group`` (names or numbers; an empty value or group means the
    default, as in Docker).  Returns it unchanged."""
    parts = value.split(":")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] == ""):
        raise UsageError(f"invalid user {value!r}", hint="write USER name, USER uid, or USER user:group")
    return value


def _close_matches(word, choices, n=1):
    """difflib's suggestions, imported only when a word is misspelt."""
    import difflib
    return difflib.get_close_matches(word, choices, n=n)
