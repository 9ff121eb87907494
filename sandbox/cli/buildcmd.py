"""`sbx build` without typer: a fully cached rebuild is measured (issue 9: <= 0.3 s), and typer
and click cost more than the whole build (importing them and building the app's ~90 commands,
~150 ms on this machine class).  `parse(argv)` reads the plain forms of build's options; anything
else (--help, an unknown or malformed option, a second context) gives None and the typer command
(cli/build.py) parses it, with click's messages.  Both end in `build()`."""
import os
import sys

# option -> (field, takes a value, repeatable); the typer command in cli/build.py declares the same.
OPTIONS = {
    "-t": ("tag", True, True), "--tag": ("tag", True, True),
    "-f": ("file", True, False), "--file": ("file", True, False),
    "--build-arg": ("build_arg", True, True),
    "--target": ("target", True, False),
    "--no-cache": ("no_cache", False, False),
    "--pull": ("pull", False, False),
    "--network": ("network", True, False),
    "-l": ("label", True, True), "--label": ("label", True, True),
    "--label-file": ("label_file", True, True),
    "-q": ("quiet", False, False), "--quiet": ("quiet", False, False),
    "--userns": ("userns", True, False),
    "--secret": ("secret", True, True),
    "--ssh": ("ssh", True, True),
    "--force": ("force", True, False),
}
DEFAULTS = {"tag": [], "file": None, "build_arg": [], "target": None, "no_cache": False, "pull": False,
            "network": "default", "label": [], "label_file": [], "quiet": False, "userns": None,
            "secret": [], "ssh": [], "force": None}


def parse(argv):
    """build's keyword arguments from argv, or None when typer should parse it."""
    kw = {k: list(v) if isinstance(v, list) else v for k, v in DEFAULTS.items()}
    context = None
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=") if a.startswith("--") else (a[:2], "", a[2:])
            if name not in OPTIONS:
                return None
            field, takes, many = OPTIONS[name]
            if not takes:
                if eq or value:
                    return None
                kw[field] = True
                continue
            if not eq and not value:
                if i >= len(argv):
                    return None
                value = argv[i]
                i += 1
            if many:
                kw[field].append(value)
            else:
                kw[field] = value
        elif context is None:
            context = a
        else:
            return None
    if context is None:
        return None
    kw["context"] = context
    return kw


def main(argv):
    """The exit code, or None to let typer parse argv."""
    kw = parse(argv)
    if kw is None:
        return None
    build(**kw)
    return 0


def _echo(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _warn(text):
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def build(context, tag=(), file=None, build_arg=(), target=None, no_cache=False, pull=False, network="default",
          label=(), label_file=(), quiet=False, userns=None, secret=(), ssh=(), force=None, out=_echo):
    """Build CONTEXT; prints the steps (or with quiet only the image id) through `out`."""
    import time

    from ..build import mounts
    from ..build.builder import Builder, Options
    from ..errors import UsageError
    from . import labels

    def pairs(items, what):
        out = {}
        for item in items:
            k, eq, v = item.partition("=")
            if not k:
                raise UsageError(f"invalid {what} {item!r}", hint="use KEY=VALUE")
            if not eq:
                if k not in os.environ:
                    continue
                v = os.environ[k]
            out[k] = v
        return out

    if network.split(":")[0] not in ("default", "none", "host", "slirp4netns", "pasta", "private", "bridge"):
        raise UsageError(f"network mode {network!r} is not supported for builds",
                         hint="use default, none, host, slirp4netns or pasta")
    t0 = time.monotonic()
    b = Builder(Options(context=context, dockerfile=file, tags=tuple(tag), build_args=pairs(build_arg, "--build-arg"),
                        target=target, no_cache=no_cache, pull=pull, network=network,
                        labels=labels.parse(label, label_file), quiet=quiet, userns=userns,
                        secrets=mounts.read_secrets(secret), ssh=mounts.read_ssh(ssh), force=force),
                out=out, warn=_warn)
    image = b.build()
    if quiet:
        out(image.id)
        return
    out(f"COMMIT {', '.join(tag) or image.short_id}")
    out(f"--> {image.short_id} ({time.monotonic() - t0:.2f}s)")
    for t in tag:
        out(f"Successfully tagged {t}")
    out(image.id)
