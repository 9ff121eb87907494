"""`--format`: the subset of Go templates that `docker ps/images --format` users write.

    {{.Field}}            a field of the row
    {{json .}}            the whole row as JSON; {{json .Field}} one field
    {{upper .Field}}      also lower, title
    table {{.A}}\\t{{.B}}  a header row, then columns aligned as Docker's tabwriter does
    json                  one JSON object per row (the fields of the listing), as {{json .}}
    \\t  \\n               written literally (shell single quotes) become a tab and a newline

Anything else (an unknown field, {{if}}, {{range}}, pipes, an unclosed action) is refused with
a UsageError that names it: a template is never ignored or half-applied."""
import json
import re

from ..errors import UsageError

_ACTION = re.compile(r"{{(.*?)}}", re.S)
_FUNCS = {"json": None, "upper": str.upper, "lower": str.lower, "title": str.title}
HINT = "supported: {{.Field}}, {{json .}}, {{json .Field}}, {{upper .Field}}, {{lower .Field}}, 'table ...', json"


class Template:
    """A compiled --format string for rows that have `fields` (name -> table header).  With
    fields=None the rows are free-form documents (inspect): any path {{.A.B}} is allowed and a
    missing one prints "<no value>", as Go templates do on maps."""

    def __init__(self, text, fields):
        self.fields = None if fields is None else dict(fields)
        self.table = text.startswith("table")
        body = text[len("table"):] if self.table else text
        body = body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
        self.parts = []  # literal strings and (func, field) tuples
        pos = 0
        for m in _ACTION.finditer(body):
            self.parts.append(body[pos:m.start()])
            self.parts.append(self._action(m.group(1), text))
            pos = m.end()
        rest = body[pos:]
        if "{{" in rest or "}}" in rest:
            raise UsageError(f"invalid --format {text!r}: unclosed action", hint=HINT)
        self.parts.append(rest)

    def _action(self, expr, text):
        words = expr.split()
        if len(words) == 1 and words[0].startswith("."):
            return None, self._field(words[0], text)
        if len(words) == 2 and words[0] in _FUNCS and words[1].startswith("."):
            return words[0], self._field(words[1], text)
        raise UsageError(f"unsupported --format action {{{{{expr}}}}} in {text!r}", hint=HINT)

    def _field(self, word, text):
        if word == ".":
            return None
        name = word[1:]
        if self.fields is None:
            if not all(part.isidentifier() for part in name.split(".")):
                raise UsageError(f"--format {text!r}: bad field {word!r}", hint=HINT)
            return name
        if name not in self.fields:
            raise UsageError(f"--format {text!r}: no field {name!r}",
                             hint="fields: " + ", ".join("." + f for f in self.fields))
        return name

    def _value(self, func, field, row):
        v = row
        for part in [] if field is None else field.split("."):
            if not isinstance(v, dict) or part not in v:
                return "<no value>"
            v = v[part]
        if func == "json":
            if field is None and self.fields is not None:
                v = {k: row[k] for k in self.fields if k in row}
            return json.dumps(v)
        if isinstance(v, (dict, list)) and (field is None or self.fields is None):
            v = json.dumps(v)
        if v is None:
            return "<no value>" if self.fields is None else ""
        v = str(v)
        return _FUNCS[func](v) if func else v

    def _line(self, row):
        return "".join(p if isinstance(p, str) else self._value(p[0], p[1], row) for p in self.parts)

    def header(self):
        def title(field):
            return "" if field is None else (self.fields or {}).get(field, field.upper())
        return "".join(p if isinstance(p, str) else title(p[1]) for p in self.parts)

    def render(self, rows):
        """The output lines for `rows` (dicts with the fields)."""
        lines = [self._line(r) for r in rows]
        if not self.table:
            return lines
        return tabulate([self.header()] + lines)


def tabulate(lines, minwidth=10):
    """Go's tabwriter as Docker sets it up (minwidth 10, padding 3; `docker top` uses 20):
    every tab-terminated cell is padded to its column's width; the last cell of a line is not."""
    out = []
    for block in _blocks([ln.split("\t") for ln in "\n".join(lines).split("\n")]):
        ncols = max(len(r) for r in block) - 1
        widths = [max([len(r[i]) + 3 for r in block if i < len(r) - 1] + [minwidth]) for i in range(ncols)]
        for r in block:
            out.append("".join(c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)).rstrip(" ")
                       if len(r) > 1 else r[0])
    return out


def _blocks(rows):
    """tabwriter aligns consecutive lines that have cells; a line without a tab ends a block."""
    block = []
    for r in rows:
        block.append(r)
        if len(r) == 1:
            yield block
            block = []
    if block:
        yield block


def compile(text, fields):
    """`--format TEXT` -> a Template, or None for the default table ('' or 'table').
    'json' is `{{json .}}`: one object a row, holding the listing's fields."""
    if text is None or text.strip() in ("", "table"):
        return None
    if text.strip() == "json":
        return Template("{{json .}}", fields)
    return Template(text, fields)


def uses(fmt, field):
    """Whether the --format text mentions {{... .field}} (e.g. ps computes sizes only then)."""
    return fmt is not None and (fmt.strip() == "json" or
                                any(field in m.group(1).split(".") or (m.group(1).split() or [""])[-1] == "."
                                    for m in _ACTION.finditer(fmt)))



def show_each(refs, get, fmt):
    """`inspect`'s output: each ref's document (`get(ref)`) through the template `fmt` (checked
    first), else all of them as one JSON list.  A ref that fails is reported on its own line and
    the others are still shown; then exit 1, as Docker does for a missing object, or the
    error's own code for anything worse (125: a damaged store)."""
    import typer
    from . import report
    from ..errors import SandboxError
    template = Template(fmt, None) if fmt else None
    docs, failed = [], 0
    for ref in refs:
        try:
            docs.append(get(ref))
        except SandboxError as e:
            report(e)
            failed = max(failed, e.exit_code)
    if template is not None:
        for line in template.render(docs):
            typer.echo(line)
    else:
        typer.echo(json.dumps(docs, indent=4))
    if failed:
        raise typer.Exit(failed)
