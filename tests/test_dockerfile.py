"""The Dockerfile front end (sandbox.build.dockerfile): parsing rules, heredocs, variable expansion,
stages and line-numbered errors, checked against what BuildKit's frontend does.  Pure Python, no sandbox."""

from __future__ import annotations

import pytest

from sandbox.build.dockerfile import (
    Heredoc, Instruction, expand, expand_heredoc, expand_words, healthcheck, parse, parse_duration,
    parse_mount, shell_command, split_words, parse_chmod, check_signal, parse_ports, check_user,
)
from sandbox.errors import UsageError


def instrs(text: str, **kw) -> list[Instruction]:
    """Every instruction of the file, global ARGs and FROMs included, in order."""
    df = parse(text, **kw)
    out = list(df.global_args)
    for st in df.stages:
        out.append(st.from_)
        out.extend(st.instructions)
    return out


def one(body: str) -> Instruction:
    """The single instruction after a FROM line."""
    df = parse("FROM scratch\n" + body)
    assert len(df.stages) == 1 and len(df.stages[0].instructions) == 1, df
    return df.stages[0].instructions[0]


def error(text: str, **kw) -> UsageError:
    with pytest.raises(UsageError) as ei:
        parse(text, **kw)
    return ei.value


# ------------------------------------------------------------------------------------ physical -> logical lines

def test_continuation_joins_lines():
    i = one("RUN echo a \\\n  b \\\n  c\n")
    assert i.args == ("echo a   b   c",)
    assert (i.line, i.end_line) == (2, 4)


def test_continuation_with_trailing_blanks_after_escape():
    assert one("RUN echo a \\  \t\n b\n").args == ("echo a  b",)


def test_escaped_escape_at_end_is_not_a_continuation():
    df = parse("FROM scratch\nRUN echo a\\\\\nRUN echo b\n")
    assert [i.args for i in df.stages[0].instructions] == [("echo a\\\\",), ("echo b",)]


def test_comment_inside_continuation_is_dropped():
    i = one("RUN apt-get update && \\\n# a comment\n    # indented comment \\\n    apt-get install x\n")
    assert i.args == ("apt-get update &&     apt-get install x",)
    assert i.end_line == 5


def test_empty_continuation_line_is_skipped_with_warning():
    df = parse("FROM scratch\nRUN echo a \\\n\n   \n  b\nRUN next\n")
    assert [i.args for i in df.stages[0].instructions] == [("echo a   b",), ("next",)]
    assert len(df.warnings) == 1 and df.warnings[0].startswith("Dockerfile:2:")


def test_leading_whitespace_and_blank_lines_ignored():
    df = parse("\n\n   FROM scratch\n\t\n    RUN  x  \n")
    assert df.stages[0].line == 3
    assert df.stages[0].instructions[0].args == ("x",)
    assert df.stages[0].instructions[0].line == 5


def test_comments_anywhere_at_line_start():
    df = parse("# top\nFROM scratch\n  # indented\nRUN echo # not a comment\n")
    assert df.stages[0].instructions[0].args == ("echo # not a comment",)


def test_continuation_to_end_of_file():
    assert one("RUN echo a \\").args == ("echo a",)


def test_crlf_line_endings():
    df = parse("FROM scratch\r\nRUN echo a \\\r\n b\r\nENV X=1\r\n")
    run, env = df.stages[0].instructions
    assert run.args == ("echo a  b",) and env.pairs == (("X", "1"),)


def test_bom_is_ignored():
    assert parse("\ufeffFROM scratch\n").stages[0].base == "scratch"


def test_bytes_input():
    assert parse(b"FROM scratch\nRUN x\n").stages[0].instructions[0].args == ("x",)


def test_keywords_are_case_insensitive():
    df = parse("from scratch as Base\nrUn x\nCopy a b\n")
    assert [i.cmd for i in df.stages[0].instructions] == ["RUN", "COPY"]
    assert df.stages[0].name == "base"


# ------------------------------------------------------------------------------------------ parser directives

def test_escape_directive_backtick():
    df = parse("# escape=`\nFROM scratch\nRUN echo a `\n  b\nCOPY c:\\x d\\\n")
    assert df.escape == "`"
    assert [i.args for i in df.stages[0].instructions] == [("echo a   b",), ("c:\\x", "d\\")]


def test_directive_whitespace_and_case():
    df = parse("#  ESCAPE  =  `  \n# Syntax=docker/dockerfile:1.7\nFROM scratch\n")
    assert df.escape == "`"
    assert df.directives == {"escape": "`", "syntax": "docker/dockerfile:1.7"}


def test_check_directive_accepted():
    assert parse("# check=skip=all\nFROM scratch\n").directives == {"check": "skip=all"}


def test_directive_after_comment_is_a_comment():
    df = parse("# hello\n# escape=`\nFROM scratch\nRUN a \\\n b\n")
    assert df.escape == "\\" and df.directives == {}
    assert df.stages[0].instructions[0].args == ("a  b",)


def test_directive_after_blank_line_is_a_comment():
    assert parse("\n# escape=`\nFROM scratch\n").escape == "\\"


def test_directive_after_instruction_is_a_comment():
    assert parse("FROM scratch\n# escape=`\n").escape == "\\"


def test_unknown_directive_ends_directives():
    df = parse("# foo=bar\n# escape=`\nFROM scratch\n")
    assert df.escape == "\\" and df.directives == {}


def test_duplicate_directive_is_an_error():
    e = error("# escape=`\n# escape=\\\nFROM scratch\n")
    assert str(e) == "Dockerfile:2: only one escape parser directive can be used"


def test_bad_escape_token():
    assert str(error("# escape=x\nFROM scratch\n")).startswith("Dockerfile:1: invalid escape token 'x'")


# ------------------------------------------------------------------------------------------------------ FROM

def test_from_plain_and_scratch():
    df = parse("FROM alpine:3.19\nFROM scratch\n")
    assert [(s.index, s.name, s.base, s.platform) for s in df.stages] == \
        [(0, None, "alpine:3.19", None), (1, None, "scratch", None)]


def test_from_platform_and_name():
    st = parse("FROM --platform=linux/arm64 busybox AS Builder\n").stages[0]
    assert (st.base, st.platform, st.name) == ("busybox", "linux/arm64", "builder")
    assert st.from_.args == ("busybox", "AS", "Builder")


def test_from_keeps_variables_for_expansion():
    df = parse("ARG TAG=1\nFROM --platform=$BUILDPLATFORM img:${TAG}\n")
    assert df.stages[0].base == "img:${TAG}" and df.stages[0].platform == "$BUILDPLATFORM"


@pytest.mark.parametrize("line, msg", [
    ("FROM", "FROM requires either one or three arguments"),
    ("FROM a b", "FROM requires either one or three arguments"),
    ("FROM a AS", "FROM requires either one or three arguments"),
    ("FROM a IS b", "FROM requires either one or three arguments"),
    ("FROM a AS 1st", 'invalid name for build stage: "1st"'),
    ("FROM a AS b@d", 'invalid name for build stage: "b@d"'),
    ("FROM --platfrom=x a", "unknown flag: --platfrom"),
    ("FROM --platform a", "missing a value on flag: --platform"),
])
def test_from_errors(line, msg):
    assert str(error(line + "\n")).startswith("Dockerfile:1: " + msg)


def test_duplicate_stage_name():
    e = error("FROM a AS x\nFROM b AS X\n")
    assert str(e) == 'Dockerfile:2: duplicate stage name "x"'
    assert "line 1" in e.hint


# ------------------------------------------------------------------------------------------------------ RUN

def test_run_shell_form():
    i = one("RUN echo hello   world\n")
    assert (i.cmd, i.args, i.json_form) == ("RUN", ("echo hello   world",), False)


def test_run_exec_form():
    i = one('RUN ["/bin/echo", "a b", "c"]\n')
    assert (i.args, i.json_form) == (("/bin/echo", "a b", "c"), True)


def test_run_exec_form_with_leading_space_and_escapes():
    i = one('RUN   [ "echo", "\\"q\\"", "\\u00e9" ]  \n')
    assert i.args == ("echo", '"q"', "é") and i.json_form


@pytest.mark.parametrize("text", ['["echo", "a"', "[echo]", '["a"] extra', "[ 'single' ]", "[NaN]", '["a",]'])
def test_run_bad_json_falls_back_to_shell_form(text):
    i = one("RUN " + text + "\n")
    assert (i.args, i.json_form) == ((text,), False)


def test_bad_json_warns():
    df = parse('FROM scratch\nCMD ["a",\n')
    assert any("Dockerfile:2:" in w and "JSON" in w for w in df.warnings)


@pytest.mark.parametrize("text", ['["echo", 1]', '["a", null]', '[["a"]]', '[true]'])
def test_json_array_of_non_strings_is_an_error(text):
    e = error("FROM scratch\nRUN " + text + "\n")
    assert str(e) == "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"


def test_run_flags():
    i = one("RUN --network=none --security=insecure --mount=type=cache,target=/c "
            "--mount=type=bind,source=x,target=/y make\n")
    assert i.flags == {"network": "none", "security": "insecure",
                       "mount": ("type=cache,target=/c", "type=bind,source=x,target=/y")}
    assert i.args == ("make",)


def test_run_flag_values_with_quotes():
    i = one('RUN --mount="type=secret,id=tok" cat /run/secrets/tok\n')
    assert i.flags["mount"] == ("type=secret,id=tok",)


def test_double_dash_ends_flags():
    i = one("RUN --network=host -- --not-a-flag\n")
    assert i.flags == {"network": "host"} and i.args == ("--not-a-flag",)


def test_single_dash_word_is_not_a_flag():
    assert one("RUN -x\n").args == ("-x",)


@pytest.mark.parametrize("line, msg", [
    ("RUN", "RUN requires at least one argument"),
    ("RUN --network=bridge x", 'network mode "bridge" not supported'),
    ("RUN --security=root x", 'security "root" is not valid'),
    ("RUN --netwrok=none x", "unknown flag: --netwrok"),
    ("RUN --network x", "missing a value on flag: --network"),
    ("RUN --network=none --network=host x", "duplicate flag specified: --network"),
    ("RUN --mount=type=nfs,target=/x x", 'unsupported mount type "nfs"'),
    ("RUN --mount=type=cache,target=/x,sharing=all x", 'unsupported sharing value "all"'),
    ("RUN --mount=type=bind,tgt=/x x", "unexpected key 'tgt'"),
    ("RUN --mount=type=secret,from=x,id=a x", "secret mount should not have a from"),
])
def test_run_errors(line, msg):
    e = error("FROM scratch\n" + line + "\n")
    assert str(e).startswith("Dockerfile:2: " + msg), str(e)


def test_unknown_flag_hint_suggests():
    assert "--network" in error("FROM scratch\nRUN --netwrok=none x\n").hint


def test_run_empty_exec_form_refused():
    assert str(error("FROM scratch\nRUN []\n")) == "Dockerfile:2: RUN requires at least one argument"


def test_shell_test_bracket_is_not_warned_about():
    df = parse("FROM scratch\nRUN [ -d /x ] || mkdir /x\n")
    assert df.stages[0].instructions[0].args == ("[ -d /x ] || mkdir /x",) and df.warnings == ()


# ---------------------------------------------------------------------------------------------- COPY / ADD

def test_copy_shell_form():
    i = one("COPY a b  c/  /dest/\n")
    assert i.args == ("a", "b", "c/", "/dest/")
    assert i.sources == ("a", "b", "c/") and i.dest == "/dest/"


def test_copy_json_form():
    i = one('COPY ["a b.txt", "/my dir/"]\n')
    assert i.json_form and i.sources == ("a b.txt",) and i.dest == "/my dir/"


def test_copy_flags():
    i = one("COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md "
            "--exclude=tmp/ src/ /app/\n")
    assert i.flags == {"from": "build", "chown": "app:app", "chmod": "0755", "link": True, "parents": True,
                       "exclude": ("*.md", "tmp/")}


@pytest.mark.parametrize("flag, value", [("--link", True), ("--link=true", True), ("--link=FALSE", False)])
def test_bool_flag_forms(flag, value):
    assert one(f"COPY {flag} a b\n").flags == {"link": value}


def test_add_flags():
    i = one("ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false --chown=1 https://x/y.tgz /z\n")
    assert i.flags == {"checksum": "sha256:abc", "keep-git-dir": True, "unpack": False, "chown": "1"}


@pytest.mark.parametrize("line, msg", [
    ("COPY onlyone", "COPY requires at least two arguments, but only one was provided"),
    ("ADD onlyone", "ADD requires at least two arguments"),
    ("COPY", "COPY requires at least two arguments"),
    ("COPY --link=maybe a b", "expecting boolean value for flag --link, not: maybe"),
    ("COPY --link= a b", "missing a value on flag: --link"),
    ("COPY --checksum=x a b", "unknown flag: --checksum"),
    ("ADD --from=x a b", "unknown flag: --from"),
    ("COPY --from a b", "missing a value on flag: --from"),
    ("COPY a <<EOF\nx\nEOF", "COPY cannot accept a heredoc as a destination"),
])
def test_copy_add_errors(line, msg):
    assert str(error("FROM scratch\n" + line + "\n")).startswith("Dockerfile:2: " + msg)


# ------------------------------------------------------------------------------------------------ ENV / LABEL

def test_env_key_value_pairs():
    i = one('ENV A=1 B="two words" C=three\\ four D= E=\'$x\'\n')
    assert i.pairs == (("A", "1"), ("B", '"two words"'), ("C", "three\\ four"), ("D", ""), ("E", "'$x'"))
    assert [(k, expand(v, {"x": "X"})) for k, v in i.pairs] == \
        [("A", "1"), ("B", "two words"), ("C", "three four"), ("D", ""), ("E", "$x")]


def test_env_legacy_form():
    i = one("ENV MY_VAR some value   with spaces\n")
    assert i.pairs == (("MY_VAR", "some value   with spaces"),)


def test_env_value_with_equals():
    assert one("ENV URL=http://x/?a=b\n").pairs == (("URL", "http://x/?a=b"),)


def test_env_quoted_blank_spanning_continuation():
    i = one('ENV A="x \\\n  y" B=2\n')
    assert i.pairs == (("A", '"x   y"'), ("B", "2"))


@pytest.mark.parametrize("line, msg", [
    ("ENV", "ENV requires at least one argument"),
    ("ENV A", "ENV must have two arguments"),
    ("ENV A=1 B", 'Syntax error - can\'t find = in "B". Must be of the form: name=value'),
    ("ENV =x", "ENV names can not be blank"),
    ("LABEL", "LABEL requires at least one argument"),
    ("LABEL a=1 b", "Syntax error - can't find = in \"b\""),
    ("ENV --x=1 A=1", "unknown flag: --x"),
])
def test_env_label_errors(line, msg):
    assert str(error("FROM scratch\n" + line + "\n")).startswith("Dockerfile:2: " + msg)


def test_label_quoted_keys_and_values():
    i = one('LABEL "com.example.vendor"="ACME Inc" version=1.0 description="a \\"quoted\\" word"\n')
    got = [(expand(k, {}), expand(v, {})) for k, v in i.pairs]
    assert got == [("com.example.vendor", "ACME Inc"), ("version", "1.0"), ("description", 'a "quoted" word')]


def test_label_legacy_form():
    assert one("LABEL maintainer someone@example.com\n").pairs == (("maintainer", "someone@example.com"),)


# ------------------------------------------------------------------------------------------------------- ARG

def test_arg_forms():
    i = one('ARG A B=2 C= D="x y"\n')
    assert i.pairs == (("A", None), ("B", "2"), ("C", ""), ("D", '"x y"'))


def test_arg_errors():
    assert str(error("FROM scratch\nARG\n")) == "Dockerfile:2: ARG requires at least one argument"
    assert str(error("FROM scratch\nARG =x\n")) == "Dockerfile:2: ARG names can not be blank"


# ---------------------------------------------------------------------------- WORKDIR USER STOPSIGNAL MAINTAINER

@pytest.mark.parametrize("cmd", ["WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"])
def test_single_string_instructions(cmd):
    assert one(f"{cmd}   some thing here  \n").args == ("some thing here",)


@pytest.mark.parametrize("cmd", ["WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"])
def test_single_string_instructions_need_an_argument(cmd):
    assert str(error(f"FROM scratch\n{cmd}\n")) == f"Dockerfile:2: {cmd} requires exactly one argument"


# ------------------------------------------------------------------------------------------- EXPOSE / VOLUME

def test_expose_words():
    assert one("EXPOSE 80/tcp  443 ${PORT}/udp\n").args == ("80/tcp", "443", "${PORT}/udp")


def test_volume_words_and_json():
    assert one("VOLUME /a /b\n").args == ("/a", "/b")
    i = one('VOLUME ["/data", " /x y "]\n')
    assert i.json_form and i.args == ("/data", "/x y")


@pytest.mark.parametrize("line, msg", [
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ('VOLUME ["/a", ""]', "VOLUME specified can not be an empty string"),
])
def test_expose_volume_errors(line, msg):
    assert str(error("FROM scratch\n" + line + "\n")) == "Dockerfile:2: " + msg


# ------------------------------------------------------------------------------------ CMD / ENTRYPOINT / SHELL

def test_cmd_and_entrypoint_forms_kept_distinct():
    a, b, c, d = parse('FROM scratch\nCMD ["echo", "hi"]\nCMD echo hi\nENTRYPOINT ["/bin/app"]\n'
                       "ENTRYPOINT exec app --flag\n").stages[0].instructions
    assert (a.args, a.json_form) == (("echo", "hi"), True)
    assert (b.args, b.json_form) == (("echo hi",), False)
    assert (c.args, c.json_form) == (("/bin/app",), True)
    assert (d.args, d.json_form) == (("exec app --flag",), False)


def test_cmd_empty_json_clears():
    i = one("ENTRYPOINT []\n")
    assert i.args == () and i.json_form


@pytest.mark.parametrize("cmd", ["CMD", "ENTRYPOINT"])
def test_cmd_needs_an_argument(cmd):
    assert str(error(f"FROM scratch\n{cmd}\n")).startswith(f"Dockerfile:2: {cmd} requires at least one argument")


def test_shell_json():
    i = one('SHELL ["/bin/bash", "-eo", "pipefail", "-c"]\n')
    assert i.args == ("/bin/bash", "-eo", "pipefail", "-c") and i.json_form


@pytest.mark.parametrize("line, msg", [
    ("SHELL /bin/bash -c", "SHELL requires the arguments to be in JSON form"),
    ("SHELL []", "SHELL requires at least one argument"),
    ("SHELL", "SHELL requires at least one argument"),
])
def test_shell_errors(line, msg):
    assert str(error("FROM scratch\n" + line + "\n")) == "Dockerfile:2: " + msg


# ------------------------------------------------------------------------------------------------ HEALTHCHECK

def test_healthcheck_none():
    i = one("HEALTHCHECK none\n")
    assert i.args == ("NONE",) and healthcheck(i) == {"Test": ["NONE"]}


def test_healthcheck_shell_cmd_with_options():
    i = one("HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 "
            "CMD curl -f http://localhost/ || exit 1\n")
    assert i.args == ("CMD", "curl -f http://localhost/ || exit 1") and not i.json_form
    assert healthcheck(i) == {"Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
                              "Interval": 300 * 10**9, "Timeout": 3 * 10**9, "StartPeriod": 90 * 10**9,
                              "StartInterval": 500 * 10**6, "Retries": 3}


def test_healthcheck_exec_cmd():
    i = one('HEALTHCHECK cmd ["/bin/check", "-q"]\n')
    assert i.json_form and healthcheck(i) == {"Test": ["CMD", "/bin/check", "-q"]}


@pytest.mark.parametrize("line, msg", [
    ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
    ("HEALTHCHECK --interval=10 CMD x", "--interval: time: missing unit in duration"),
    ("HEALTHCHECK --timeout=1us CMD x", 'Interval "timeout" cannot be less than 1ms'),
    ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
    ("HEALTHCHECK --retries=x CMD x", 'strconv.ParseInt: parsing "x": invalid syntax'),
    ("HEALTHCHECK --every=1s CMD x", "unknown flag: --every"),
])
def test_healthcheck_errors(line, msg):
    assert str(error("FROM scratch\n" + line + "\n")).startswith("Dockerfile:2: " + msg)


@pytest.mark.parametrize("text, ns", [
    ("0", 0), ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9), ("500ms", 5 * 10**8),
    ("2us", 2000), ("3µs", 3000), ("7ns", 7), (".5s", 5 * 10**8), ("1h2m3s4ms", 3723004000000), ("-1s", -10**9),
])
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "s", "1", "1x", "1.s.", "1 s", "--1s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# ---------------------------------------------------------------------------------------------------- ONBUILD

def test_onbuild_wraps_instruction():
    i = one("ONBUILD RUN --network=none echo hi\n")
    assert i.cmd == "ONBUILD" and i.args == ("RUN --network=none echo hi",)
    assert (i.trigger.cmd, i.trigger.args, i.trigger.flags) == ("RUN", ("echo hi",), {"network": "none"})


def test_onbuild_copy_keeps_text():
    i = one("onbuild   COPY . /app/src\n")
    assert i.args == ("COPY . /app/src",) and i.trigger.args == (".", "/app/src")


@pytest.mark.parametrize("line, msg", [
    ("ONBUILD", "ONBUILD requires at least one argument"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD maintainer x", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("ONBUILD FOO x", "unknown instruction: FOO"),
    ("ONBUILD COPY a", "COPY requires at least two arguments"),
])
def test_onbuild_errors(line, msg):
    assert str(error("FROM scratch\n" + line + "\n")).startswith("Dockerfile:2: " + msg)


def test_onbuild_heredoc():
    i = one("ONBUILD RUN <<EOF\necho trig\nEOF\n")
    assert i.args == ("RUN <<EOF\necho trig\nEOF",)
    assert i.trigger.heredocs == (Heredoc("EOF", "echo trig\n", word="<<EOF"),)
    # the stored expression parses back to the same trigger
    again = one(i.args[0] + "\n")
    assert again.heredocs == i.trigger.heredocs and again.args == i.trigger.args


# ---------------------------------------------------------------------------------------------------- heredocs

def test_run_heredoc():
    df = parse("FROM scratch\nRUN <<EOF\napt-get update\n  apt-get install -y x\nEOF\nRUN after\n")
    a, b = df.stages[0].instructions
    assert a.args == ("<<EOF",)
    assert a.heredocs == (Heredoc("EOF", "apt-get update\n  apt-get install -y x\n", True, False, None, "<<EOF"),)
    assert (a.line, a.end_line) == (2, 5)
    assert b.args == ("after",) and b.line == 6


def test_heredoc_body_is_not_comment_stripped_or_continued():
    i = one("RUN <<EOF\n# keep me\necho a \\\nFROM x\n\nEOF\n")
    assert i.heredocs[0].content == "# keep me\necho a \\\nFROM x\n\n"


def test_heredoc_chomp_strips_leading_tabs():
    i = one("RUN <<-EOT\n\t\techo a\n\t  echo b\n\tEOT\n")
    h = i.heredocs[0]
    assert h.chomp and h.content == "echo a\n  echo b\n"


def test_heredoc_without_chomp_needs_exact_terminator():
    i = one("RUN <<EOT\n\techo\n\tEOT\nEOT\n")
    assert i.heredocs[0].content == "\techo\n\tEOT\n"


@pytest.mark.parametrize("word, name, expand_", [
    ('<<"EOF"', "EOF", False), ("<<'EOF'", "EOF", False), ('<<E"O"F', "EOF", False), ("<<EOF", "EOF", True),
])
def test_heredoc_quoted_delimiter_disables_expansion(word, name, expand_):
    h = one(f"COPY {word} /x\nhi $A\n{name}\n").heredocs[0]
    assert (h.name, h.expand, h.word) == (name, expand_, word)
    assert expand_heredoc(h, {"A": "1"}) == ("hi 1\n" if expand_ else "hi $A\n")


def test_several_heredocs_on_one_line():
    i = one("RUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n")
    assert [(h.name, h.content) for h in i.heredocs] == [("FILE1", "I am\nfirst\n"), ("FILE2", "I am\nsecond\n")]
    assert shell_command(i) == ("<<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2",
                                None)


def test_heredoc_fd():
    i = one("RUN 3<<EOF cat /proc/self/fd/3\nx\nEOF\n")
    assert i.heredocs[0].fd == 3


def test_copy_heredoc_creates_file():
    i = one("COPY --chmod=755 <<EOF /usr/local/bin/hello\n#!/bin/sh\necho hello\nEOF\n")
    h = i.heredocs[0]
    assert i.sources == (h,) and i.dest == "/usr/local/bin/hello"
    assert h.content == "#!/bin/sh\necho hello\n"


def test_copy_mixed_heredoc_and_files():
    i = one("COPY a <<ONE b <<TWO /dst/\n1\nONE\n2\nTWO\n")
    assert [s if isinstance(s, str) else s.name for s in i.sources] == ["a", "ONE", "b", "TWO"]


def test_run_stdin_heredoc():
    i = one('RUN python3 <<EOF\nprint("hi")\nEOF\n')
    assert shell_command(i) == ('python3 <<EOF\nprint("hi")\nEOF', None)


def test_lone_heredoc_runs_its_content():
    assert shell_command(one("RUN <<EOF\necho a\necho b\nEOF\n")) == ("echo a\necho b\n", None)


def test_lone_heredoc_with_shebang_is_a_script():
    i = one("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n")
    assert shell_command(i) == ("", i.heredocs[0])


def test_shell_command_without_heredoc():
    assert shell_command(one("RUN echo hi\n")) == ("echo hi", None)


def test_heredoc_after_continuation():
    i = one("RUN <<EOF \\\n  bash -e\necho x\nEOF\n")
    assert i.args == ("<<EOF   bash -e",) and i.heredocs[0].content == "echo x\n"


@pytest.mark.parametrize("line", ['RUN echo "<<EOF"', "RUN echo '<<EOF'", "RUN cat << EOF", "RUN a <<<EOF",
                                  "RUN echo \\<<EOF", 'RUN ["cat", "<<EOF"]', "ENV A=<<EOF"])
def test_not_heredocs(line):
    i = one(line + "\n")
    assert i.heredocs == ()


def test_unterminated_heredoc():
    e = error("FROM scratch\nRUN x\nRUN <<EOF\necho\nEOF \n")
    assert str(e).startswith("Dockerfile:3: unterminated heredoc")


def test_heredoc_crlf_terminator():
    i = one("RUN <<EOF\r\necho\r\nEOF\r\n")
    assert i.heredocs[0].content == "echo\r\n"


def test_copy_heredoc_expansion_rules():
    h = one('COPY <<EOF /x\na=$A "${B:-b}" \\$C \'$A\'\nEOF\n').heredocs[0]
    assert expand_heredoc(h, {"A": "1"}) == 'a=1 "b" $C \'1\'\n'


# ------------------------------------------------------------------------------------------------- expansion

ENV = {"A": "a", "EMPTY": "", "SP": "x  y", "PATH": "/usr/local/bin:/usr/bin:/bin", "F": "file.tar.gz"}


@pytest.mark.parametrize("word, out", [
    ("$A", "a"), ("${A}", "a"), ("pre${A}post", "preapost"), ("$A$A", "aa"),
    ("$UNSET", ""), ("${UNSET}", ""), ("$Ab", ""), ("${A}b", "ab"),
    ("${A:-d}", "a"), ("${EMPTY:-d}", "d"), ("${UNSET:-d}", "d"),
    ("${A-d}", "a"), ("${EMPTY-d}", ""), ("${UNSET-d}", "d"),
    ("${A:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${UNSET:+alt}", ""),
    ("${A+alt}", "alt"), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${UNSET:-$A}", "a"), ("${UNSET:-${A:+x}y}", "xy"), ('${UNSET:-"q w"}', "q w"),
    ("${F%.*}", "file.tar"), ("${F%%.*}", "file"), ("${F#*.}", "tar.gz"), ("${F##*.}", "gz"),
    ("${PATH/bin/X}", "/usr/local/X:/usr/bin:/bin"), ("${PATH//bin/X}", "/usr/local/X:/usr/X:/X"),
    ("$", "$"), ("a$", "a$"), ("$/x", "$/x"), ("$1", ""),
    ("\\$A", "$A"), ("\\${A}", "${A}"), ("a\\ b", "a b"), ("\\\\", "\\"),
    ("'$A'", "$A"), ('"$A"', "a"), ('"\\$A"', "$A"), ('"a\\b"', "a\\b"), ('"a\\"b"', 'a"b'), ("'a\\b'", "a\\b"),
    ('"$SP"', "x  y"), ("$SP", "x  y"), ("", ""), ("plain", "plain"),
])
def test_expand(word, out):
    assert expand(word, ENV) == out


def test_expand_backtick_escape():
    assert expand("`$A and \\x", ENV, escape="`") == "$A and \\x"
    assert expand('"`$A"', ENV, escape="`") == "$A"


@pytest.mark.parametrize("word, msg", [
    ("${A", "syntax error: missing '}'"), ("${}", "bad substitution"), ("${:-x}", "bad substitution"),
    ("${A:-x", "missing '}'"), ("'abc", "matching single-quote"), ('"abc', "matching double-quote"),
    ("${A:=x}", "unsupported modifier (:=)"), ("${A:#x}", "unsupported modifier (:#)"),
    ("${UNSET?must be set}", "UNSET: must be set"), ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${UNSET:?}", "UNSET: is not allowed to be unset"),
])
def test_expand_errors(word, msg):
    with pytest.raises(UsageError) as ei:
        expand(word, ENV, where="Dockerfile:9")
    assert str(ei.value).startswith(f'Dockerfile:9: failed to process "{word}": ')
    assert msg in str(ei.value)


def test_expand_question_mark_ok_when_set():
    assert expand("${A?x}", ENV) == "a" and expand("${EMPTY?x}", ENV) == ""


def test_expand_words_and_split_words():
    assert expand_words(["$A/x", "${SP}", '"q"'], ENV) == ["a/x", "x  y", "q"]
    assert split_words('$SP "a b" c\\ d', ENV) == ["x", "y", "a b", "c d"]


def test_expand_does_not_touch_the_env():
    env = dict(ENV)
    expand("${NEW:-x}", env)
    assert env == ENV


def test_run_and_cmd_are_not_expanded_by_the_parser():
    i = one("RUN echo $HOME ${X:-y}\n")
    assert i.args == ("echo $HOME ${X:-y}",)


# -------------------------------------------------------------------------------------------------- mounts

def test_parse_mount_defaults():
    assert parse_mount("target=/src") == {"type": "bind", "target": "/src", "readonly": True}
    assert parse_mount("type=cache,target=/c,id=x,sharing=locked,mode=0755,uid=1") == \
        {"type": "cache", "target": "/c", "id": "x", "sharing": "locked", "mode": 0o755, "uid": 1, "readonly": False}
    assert parse_mount("type=bind,from=build,src=/out,dst=/in,rw") == \
        {"type": "bind", "from": "build", "source": "/out", "target": "/in", "readonly": False}
    assert parse_mount("type=secret,id=tok,required")["required"] is True


def test_parse_mount_expands_with_env():
    assert parse_mount("type=cache,target=$DIR", {"DIR": "/c"})["target"] == "/c"
    assert parse_mount("type=cache,target=$DIR")["target"] == "$DIR"


def test_parse_mount_from_refuses_variables():
    with pytest.raises(UsageError, match="'from' doesn't support variable expansion"):
        parse_mount("from=$STAGE,target=/x")


# ------------------------------------------------------------------------------------------ stages and targets

MULTI = """\
ARG GO=1.22
ARG BASE=alpine
FROM golang:${GO} AS build
ARG GO
RUN go build
FROM build AS test
RUN go test
FROM ${BASE}
COPY --from=build /out /app
"""


def test_stages_and_global_args():
    df = parse(MULTI)
    assert [(s.index, s.name, s.base, s.line) for s in df.stages] == \
        [(0, "build", "golang:${GO}", 3), (1, "test", "build", 6), (2, None, "${BASE}", 8)]
    assert [g.pairs for g in df.global_args] == [(("GO", "1.22"),), (("BASE", "alpine"),)]
    assert [i.cmd for i in df.stages[0].instructions] == ["ARG", "RUN"]


def test_target_lookup():
    df = parse(MULTI)
    assert df.target().index == 2
    assert df.target("build").index == 0
    assert df.target("TEST").index == 1
    assert df.target("2").index == 2 and df.target(0).index == 0
    with pytest.raises(UsageError) as ei:
        df.target("release")
    assert str(ei.value) == 'Dockerfile: target stage "release" could not be found'
    assert "build, test" in ei.value.hint
    with pytest.raises(UsageError):
        df.target("3")


def test_stage_lookup_before():
    df = parse(MULTI)
    assert df.stage("build", before=1).index == 0
    assert df.stage("test", before=1) is None
    assert df.stage("alpine") is None
    assert df.stage("0", before=0) is None


@pytest.mark.parametrize("text, line, msg", [
    ("RUN x\nFROM a\n", 1, "no build stage in current context: RUN comes before the first FROM"),
    ("ARG A\nENV B=1\nFROM a\n", 2, "no build stage in current context: ENV"),
    ("", 1, "file with no instructions"),
    ("# only a comment\n\n", 2, "file with no instructions"),
    ("ARG A=1\n", 1, "dockerfile contains no stages to build"),
    ("FROM a\nFOOBAR x\n", 2, "unknown instruction: FOOBAR"),
    ("FROM a\n\n\nfoobar x\n", 4, "unknown instruction: FOOBAR"),
])
def test_structure_errors(text, line, msg):
    assert str(error(text)).startswith(f"Dockerfile:{line}: {msg}")


def test_unknown_instruction_hint():
    e = error("FROM a\nRUNN x\n")
    assert str(e) == "Dockerfile:2: unknown instruction: RUNN" and e.hint == "did you mean RUN?"


def test_error_names_the_file_and_first_line_of_instruction():
    e = error("FROM a\nRUN --bad=1 \\\n  x\n", name="build/Dockerfile.dev")
    assert str(e) == "build/Dockerfile.dev:2: unknown flag: --bad"


def test_error_is_usage_error_with_exit_code_125():
    e = error("FROM a\nNOPE\n")
    assert isinstance(e, UsageError) and e.exit_code == 125


def test_maintainer_deprecated_but_accepted():
    assert one("MAINTAINER Jane <jane@example.com>\n").args == ("Jane <jane@example.com>",)


def test_instruction_original_text():
    i = one("RUN --mount=type=cache,target=/c \\\n    make   \n")
    assert i.original == "RUN --mount=type=cache,target=/c     make"


# --------------------------------------------------------------------------------------- real-world files

REAL_GO = """\
# syntax=docker/dockerfile:1.7

ARG GO_VERSION=1.22
ARG ALPINE_VERSION=3.19

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine${ALPINE_VERSION} AS base
WORKDIR /src
ENV CGO_ENABLED=0 \\
    GOFLAGS="-trimpath -mod=readonly"
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \\
    go mod download

FROM base AS build
ARG TARGETOS TARGETARCH
RUN --mount=type=bind,target=. \\
    --mount=type=cache,target=/root/.cache/go-build \\
    # build a static binary
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app ./cmd/app

FROM scratch AS release
COPY --from=build /out/app /app
USER 65534:65534
EXPOSE 8080/tcp
HEALTHCHECK --interval=30s --timeout=3s CMD ["/app", "healthcheck"]
ENTRYPOINT ["/app"]
CMD ["serve"]
"""


def test_real_world_multistage_go():
    df = parse(REAL_GO)
    assert df.directives == {"syntax": "docker/dockerfile:1.7"}
    assert [g.pairs[0][0] for g in df.global_args] == ["GO_VERSION", "ALPINE_VERSION"]
    assert [s.name for s in df.stages] == ["base", "build", "release"]
    base, build, release = df.stages
    assert base.platform == "$BUILDPLATFORM"
    assert expand(base.base, {"GO_VERSION": "1.22", "ALPINE_VERSION": "3.19"}) == "golang:1.22-alpine3.19"
    env = base.instructions[1]
    assert [(k, expand(v, {})) for k, v in env.pairs] == [("CGO_ENABLED", "0"), ("GOFLAGS", "-trimpath -mod=readonly")]
    run = build.instructions[1]
    assert run.flags["mount"] == ("type=bind,target=.", "type=cache,target=/root/.cache/go-build")
    assert run.args == ("GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app ./cmd/app",)
    assert (run.line, run.end_line) == (16, 19)
    assert [i.cmd for i in release.instructions] == ["COPY", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"]
    assert healthcheck(release.instructions[3])["Test"] == ["CMD", "/app", "healthcheck"]
    assert df.target("release") is release and df.stage("build", before=2) is build


REAL_PY = """\
FROM python:3.12-slim
LABEL org.opencontainers.image.title="demo app" \\
      org.opencontainers.image.licenses=MIT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN <<EOF
set -e
apt-get update
apt-get install -y --no-install-recommends curl
rm -rf /var/lib/apt/lists/*
EOF
COPY <<-"EOF" /etc/app.conf
\tname = $APP
\tdebug = false
\tEOF
RUN python3 <<PY > /version.txt
import sys
print(sys.version)
PY
WORKDIR /app
COPY --chown=app:app . .
VOLUME ["/data"]
STOPSIGNAL SIGINT
ONBUILD COPY requirements.txt /app/
CMD python3 -m app
"""


def test_real_world_heredocs():
    st = parse(REAL_PY).stages[0]
    cmds = [i.cmd for i in st.instructions]
    assert cmds == ["LABEL", "SHELL", "RUN", "COPY", "RUN", "WORKDIR", "COPY", "VOLUME", "STOPSIGNAL", "ONBUILD", "CMD"]
    label, shell, run1, conf, run2 = st.instructions[:5]
    assert [(k, expand(v, {})) for k, v in label.pairs] == \
        [("org.opencontainers.image.title", "demo app"), ("org.opencontainers.image.licenses", "MIT")]
    assert run1.heredocs[0].content.startswith("set -e\napt-get update\n")
    assert shell_command(run1) == (run1.heredocs[0].content, None)
    h = conf.heredocs[0]
    assert (h.expand, h.chomp, h.content) == (False, True, "name = $APP\ndebug = false\n")
    assert expand_heredoc(h, {"APP": "x"}) == "name = $APP\ndebug = false\n"
    assert conf.sources == (h,) and conf.dest == "/etc/app.conf"
    assert shell_command(run2) == ("python3 <<PY > /version.txt\nimport sys\nprint(sys.version)\nPY", None)
    assert st.instructions[5].line == 19
    assert st.instructions[9].trigger.cmd == "COPY"
    assert st.instructions[10].args == ("python3 -m app",) and not st.instructions[10].json_form


REAL_WINDOWS_STYLE = """\
# escape=`

FROM mcr.microsoft.com/windows/servercore:ltsc2022
# continuation with comments inside
RUN powershell -Command `
    # download
    Invoke-WebRequest https://example.com/x.zip -OutFile C:\\x.zip ; `

    Expand-Archive C:\\x.zip -DestinationPath C:\\x
COPY testfile.txt c:\\
ENV DIR=C:\\app
WORKDIR ${DIR}
"""


def test_real_world_backtick_escape():
    df = parse(REAL_WINDOWS_STYLE)
    assert df.escape == "`"
    run, copy, env, workdir = df.stages[0].instructions
    assert run.args == ("powershell -Command     Invoke-WebRequest https://example.com/x.zip -OutFile C:\\x.zip ; "
                        "    Expand-Archive C:\\x.zip -DestinationPath C:\\x",)
    assert (run.line, run.end_line) == (5, 9)
    assert len(df.warnings) == 1        # the empty continuation line
    assert copy.args == ("testfile.txt", "c:\\")
    dirval = expand(env.pairs[0][1], {}, escape=df.escape)
    assert dirval == "C:\\app"
    assert expand(workdir.args[0], {"DIR": dirval}, escape=df.escape) == "C:\\app"


def test_special_parameters_and_digits():
    assert expand("$@x $1y $12z $$", {}) == "x y z "


def test_quotes_inside_values_are_data():
    assert expand("$Q", {"Q": '"a b"'}) == '"a b"'
    assert split_words("$Q", {"Q": '"a b"'}) == ['"a', 'b"']


def test_env_words_with_backtick_escape():
    i = parse("# escape=`\nFROM scratch\nENV A=x` y B=c:\\d\n").stages[0].instructions[0]
    assert [(k, expand(v, {}, escape="`")) for k, v in i.pairs] == [("A", "x y"), ("B", "c:\\d")]


def test_add_heredoc():
    i = one("ADD <<EOF /x\n${X:-d}\nEOF\n")
    assert expand_heredoc(i.sources[0], {}) == "d\n"


# ------------------------------------------------------------------------- values checked when applied

@pytest.mark.parametrize("value, mode", [("755", 0o755), ("0644", 0o644), ("0", 0), ("7777", 0o7777),
                                         ("07777", 0o7777)])
def test_parse_chmod_takes_octal_up_to_7777(value, mode):
    assert parse_chmod(value) == mode


@pytest.mark.parametrize("value", ["99999", "abc", "u+x", "888", "-1", "7777777", "17777", "", "0x1ff", " 755"])
def test_parse_chmod_refuses_the_rest(value):
    with pytest.raises(UsageError, match="invalid --chmod value") as e:
        parse_chmod(value)
    assert "octal" in e.value.hint


@pytest.mark.parametrize("value", ["SIGTERM", "term", "SIGINT", "kill", "1", "9", "64", "SIGRTMIN"])
def test_check_signal_accepts_what_stop_can_send(value):
    assert check_signal(value) == value


@pytest.mark.parametrize("value", ["99", "0", "65", "SIGFOO", "FOO", "", "-9", "SIG_IGN", "\u0663"])
def test_check_signal_refuses_the_rest(value):
    with pytest.raises(UsageError, match="invalid signal"):
        check_signal(value)


def test_parse_ports():
    assert parse_ports("80") == ["80/tcp"]
    assert parse_ports("53/UDP") == ["53/udp"]
    assert parse_ports("8000-8002/sctp") == ["8000/sctp", "8001/sctp", "8002/sctp"]
    assert parse_ports("65535") == ["65535/tcp"]


@pytest.mark.parametrize("value, msg", [("abc", "invalid port"), ("99999999", "invalid port"), ("0", "invalid port"),
                                        ("65536", "invalid port"), ("9-1", "invalid port"), ("80/bogus", "protocol"),
                                        ("80/", "protocol"), ("\u0663", "invalid port")])
def test_parse_ports_refuses(value, msg):
    with pytest.raises(UsageError, match=msg):
        parse_ports(value)


@pytest.mark.parametrize("value, ok", [("app", True), ("1000", True), ("1000:1000", True), ("a:b", True),
                                       ("1:", True), ("", True),
                                       ("1:2:3", False), (":1", False), ("a:b:", False)])
def test_check_user(value, ok):
    if ok:
        assert check_user(value) == value
    else:
        with pytest.raises(UsageError, match="invalid user"):
            check_user(value)
