"""RUN --mount for `sbx build`: BuildKit's mount types, carried out with the runtime's binds and
tmpfs mounts (Dockerfile reference, "RUN --mount").

  bind    a copy of a context path, or of a stage's or image's path (`from=`), read-only unless
          `rw` (whose writes are then discarded with the copy); its content is part of the step's
          cache key, as in BuildKit.
  cache   a directory kept between builds under the store (`buildcache/mounts/OWNER/ID`), never
          in the image nor in the cache key; `id` (default: the target), `sharing` shared (many
          steps at once), locked (one at a time) or private (a new directory while another step
          holds it), `mode`/`uid`/`gid` when made, `from`/`source` to seed it.
  tmpfs   a tmpfs (`size`).
  secret  a file (default /run/secrets/ID, mode 0400) or an environment variable (`env=`) holding
          a secret given with `sbx build --secret id=ID,src=FILE|env=VAR`; never in the image,
          and neither its content nor its presence goes into the cache key.  A missing secret is
          skipped (said so in the output) unless `required`.
  ssh     the agent socket given with `sbx build --ssh ID=SOCKET` (default: $SSH_AUTH_SOCK) at
          /run/buildkit/ssh_agent.N, SSH_AUTH_SOCK pointing there.

Mount points the step's mounts made in the image (an empty file or directory the launcher
created) are removed before the layer is made, so no trace of a mount is committed."""
from __future__ import annotations

import fcntl
import hashlib
import os

from ..errors import UsageError
from . import dockerfile as dfmod

_DEFAULTS = {"cache": 0o755, "secret": 0o400, "ssh": 0o600}
_FOR_TYPES = {"uid": ("cache", "secret", "ssh"), "gid": ("cache", "secret", "ssh"),
              "mode": ("cache", "secret", "ssh"), "size": ("tmpfs",), "env": ("secret",),
              "id": ("cache", "secret", "ssh"), "from": ("bind", "cache"), "source": ("bind", "cache")}


class MountError(UsageError):
    pass


def parse(values, env, escape, workdir, where):
    """The --mount values of one RUN, expanded with `env` and checked: a list of dicts
    (dockerfile.parse_mount's keys) with an absolute `target`."""
    out = []
    for n, value in enumerate(values):
        try:
            m = dfmod.parse_mount(value, env, escape=escape)
        except UsageError as e:
            raise MountError(f"{where}: --mount={value}: {e.msg}", hint=e.hint) from None
        check(m, f"{where}: --mount={value}")
        kind = m["type"]
        if kind == "secret":
            m.setdefault("id", os.path.basename(m["target"]) if m.get("target") else None)
            if not m["id"]:
                raise MountError(f"{where}: --mount={value}: a secret mount needs an id",
                                 hint="add id=NAME (the id given to sbx build --secret)")
            if "target" not in m and "env" not in m:
                m["target"] = f"/run/secrets/{m['id']}"
        elif kind == "ssh":
            m.setdefault("id", "default")
            m.setdefault("target", f"/run/buildkit/ssh_agent.{n}")
        elif kind == "cache":
            m.setdefault("id", m["target"])
        if m.get("target"):
            t = m["target"]
            m["target"] = os.path.normpath(t if t.startswith("/") else os.path.join(workdir or "/", t))
            if m["target"] == "/":
                raise MountError(f"{where}: --mount={value}: cannot mount on /", hint="give a target below /")
        out.append(m)
    return out


def check(m, where):
    """BuildKit's per-type rules for one parsed mount (values holding a variable are left to the
    step, which checks them expanded)."""
    kind = m["type"]
    for key, kinds in _FOR_TYPES.items():
        if key in m and kind not in kinds:
            raise MountError(f"{where}: unexpected key '{key}' for mount type '{kind}'",
                             hint=f"{key} is for {' and '.join(kinds)} mounts")
    if kind in ("bind", "cache", "tmpfs") and not m.get("target"):
        raise MountError(f"{where}: mount type '{kind}' needs a target", hint="add target=/path")
    if kind == "tmpfs" and "size" in m and "$" not in m["size"]:
        tmpfs_size(m["size"], where)


def tmpfs_size(text, where):
    """A tmpfs size as BuildKit takes it (bytes, or with k/m/g, optional b): bytes."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(t[-1:], 1)
    digits = t[:-1] if mult != 1 else t
    if not digits.isdigit():
        raise MountError(f"{where}: invalid size {text!r} for a tmpfs mount", hint="use bytes or 64m, 1g ...")
    return int(digits) * mult


class Prepared:
    """The mounts of one RUN step made ready: binds and tmpfs mounts for spec.build, extra
    environment, and the locks of its cache mounts (released by close())."""

    def __init__(self):
        self.volumes: list[tuple[str, str, str]] = []
        self.tmpfs: list[str] = []
        self.env: dict[str, str] = {}
        self.targets: list[str] = []
        self.notes: list[str] = []
        self.caches: dict[str, str] = {}
        self._locks: list[int] = []

    def close(self):
        for fd in self._locks:
            os.close(fd)
        self._locks = []


def key_parts(builder, mounts, where):
    """What of the mounts goes into the step's cache key: a bind mount's source content (as in
    BuildKit); cache, tmpfs, secret and ssh mounts add nothing (the instruction text has them)."""
    out = []
    for m in mounts:
        if m["type"] == "bind":
            roots, ignore, _ = _source(builder, m, where)
            # what the mount shows: a source that is a link is hashed as its target, followed
            # inside the context or stage (as materialize does), not as the link
            digest = builder.hash_sources(roots, [m.get("source") or "/"], ignore, where, context=not m.get("from"),
                                          follow=True)
            out.append(["bind", m["target"], m.get("from"), m.get("source"), digest])
    return out


def _source(builder, m, where):
    """(roots, .dockerignore patterns, owners kept) of a mount's `from` (the context by default)."""
    if m.get("from"):
        return builder._stage_lowers(m["from"], where), None, builder.worker.in_userns
    return [builder.context], builder.ignore, False


def prepare(builder, mounts, tmpdir, where) -> Prepared:
    p = Prepared()
    try:
        for n, m in enumerate(mounts):
            _prepare_one(builder, m, n, tmpdir, where, p)
    except BaseException:
        p.close()
        raise
    return p


def _prepare_one(builder, m, n, tmpdir, where, p):
    kind, target = m["type"], m.get("target")
    mode = m.get("mode", _DEFAULTS.get(kind, 0o755))
    uid, gid = m.get("uid", 0), m.get("gid", 0)
    mapped = builder.worker.in_userns
    if kind == "bind":
        roots, ignore, keep = _source(builder, m, where)
        dest = os.path.join(tmpdir, f"mount-{n}")
        os.mkdir(dest, 0o700)
        path, unset = builder.worker.call("sandbox.build.placement:materialize", dest=dest, roots=roots,
                                          source=m.get("source") or "/", ignore=ignore, where=where, keep_owners=keep)
        if unset:  # a file capability refused outside a user namespace: set from one, or said
            builder._set_xattrs(dest, unset, where)
        p.volumes.append((path, target, "ro" if m["readonly"] else "rw"))
    elif kind == "cache":
        path = _cache_dir(builder, m, mode, uid, gid, mapped, where, p)
        p.volumes.append((path, target, "ro" if m["readonly"] else "rw"))
    elif kind == "tmpfs":
        opts = ["mode=1777"]
        if m.get("size"):
            opts.append(f"size={tmpfs_size(m['size'], where)}")
        p.tmpfs.append(f"{target}:{','.join(opts)}")
    elif kind == "secret":
        secret = builder.opts.secrets.get(m["id"])
        if secret is None:
            if m.get("required"):
                raise MountError(f"{where}: secret {m['id']!r} is required but was not given",
                                 hint=f"pass it: sbx build --secret id={m['id']},src=FILE (or env=VAR)")
            p.notes.append(f"{where}: secret {m['id']!r} was not given: the step runs without it")
            return
        if m.get("env"):
            p.env[m["env"]] = secret.decode("latin-1")
        if target:
            path = os.path.join(tmpdir, f"secret-{n}")
            builder.worker.call("sandbox.build.placement:write_secret", path=path, data=secret.decode("latin-1"),
                                mode=mode, uid=uid, gid=gid, mapped=mapped)
            p.volumes.append((path, target, "ro"))
    elif kind == "ssh":
        sock = builder.opts.ssh.get(m["id"])
        if sock is None:
            raise no_ssh(m["id"], where)
        p.volumes.append((sock, target, "rw"))
        p.env["SSH_AUTH_SOCK"] = target
    if target:
        p.targets.append(target)


APT_CONF = "/etc/apt/apt.conf.d/00sbx-root-emulation"


def apt_as_root(lowers, tmpdir, p):
    """Root emulation and apt: apt switches to its _apt user for downloads and then checks that
    the switch happened, which an emulated setresuid cannot pass ("Could not switch group").
    Where the image has apt, the step sees a read-only APT_CONF telling apt to stay root (what
    Charliecloud writes for its root emulation), mounted for the step only, never committed."""
    from ..image.mergedview import View
    try:
        with View(lowers) as v:
            r = v.resolve("etc/apt/apt.conf.d", follow=True)
            found = r.entry is not None and r.entry.is_dir
            r.close()
    except OSError:
        return
    if not found:
        return
    path = os.path.join(tmpdir, "apt-root-emulation.conf")
    with open(path, "w") as f:
        f.write("// sbx build: root emulation (no subordinate id range): apt cannot switch to _apt.\n"
                "APT::Sandbox::User \"root\";\n")
    os.chmod(path, 0o644)
    p.volumes.append((path, APT_CONF, "ro"))
    p.targets.append(APT_CONF)


def no_ssh(sid, where):
    return MountError(f"{where}: RUN --mount=type=ssh needs the SSH agent socket {sid!r}, and this build was "
                      f"given none", hint=f"start an agent (ssh-agent, ssh-add) and build with --ssh {sid} (it "
                      f"takes $SSH_AUTH_SOCK) or --ssh {sid}=/path/to/agent.sock")


def _cache_dir(builder, m, mode, uid, gid, mapped, where, p):
    """The directory of a cache mount, locked for the step as `sharing` says."""
    base = os.path.join(builder.store.root, "buildcache", "mounts", builder.owner)
    os.makedirs(base, exist_ok=True)
    name = hashlib.sha256(m["id"].encode()).hexdigest()[:32]
    sharing = m.get("sharing") or "shared"
    if sharing != "private" and m["id"] in p.caches:  # the same cache twice in one step: one lock
        return p.caches[m["id"]]
    for i in range(64):
        path = os.path.join(base, name if i == 0 else f"{name}-{i}")
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if sharing == "shared":
                fcntl.flock(fd, fcntl.LOCK_SH)
            elif sharing == "locked":
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:  # private: this step's alone; another instance while one is in use
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
        except BaseException:
            os.close(fd)
            raise
        p._locks.append(fd)
        roots = ignore = None
        if m.get("from") or m.get("source"):
            roots, ignore, _ = _source(builder, m, where)
        unset = builder.worker.call("sandbox.build.placement:make_cache_dir", path=path, mode=mode, uid=uid,
                                    gid=gid, roots=roots, source=m.get("source"), ignore=ignore, where=where,
                                    mapped=mapped)
        if unset:
            builder._set_xattrs(path, unset, where)
        if sharing != "private":
            p.caches[m["id"]] = path
        return path
    raise MountError(f"{where}: too many private instances of cache {m['id']!r} in use")


def read_secrets(items):
    """`sbx build --secret` values -> {id: bytes}: id=ID with src=FILE (or source=), env=VAR, or
    neither (the variable named ID, as buildx does)."""
    out = {}
    for item in items:
        fields = dict(f.partition("=")[::2] for f in item.split(","))
        sid = fields.pop("id", "")
        kind = fields.pop("type", "")
        src = fields.pop("src", None) or fields.pop("source", None)
        var = fields.pop("env", None)
        if not sid or fields or kind not in ("", "file", "env"):
            raise UsageError(f"invalid --secret {item!r}", hint="use id=ID,src=FILE or id=ID,env=VAR")
        if src is not None and kind != "env":
            try:
                with open(os.path.expanduser(src), "rb") as f:
                    out[sid] = f.read()
            except OSError as e:
                raise UsageError(f"--secret {item!r}: cannot read {src}: {e.strerror}") from None
            continue
        var = var or src or sid
        if var not in os.environ:
            raise UsageError(f"--secret {item!r}: environment variable {var} is not set",
                             hint="set it, or give the secret from a file with src=FILE")
        out[sid] = os.environb[var.encode()]
    return out


def read_ssh(items):
    """`sbx build --ssh` values -> {id: agent socket path}: ID (the agent at $SSH_AUTH_SOCK) or
    ID=SOCKET."""
    out = {}
    for item in items:
        sid, eq, path = item.partition("=")
        if not sid:
            raise UsageError(f"invalid --ssh {item!r}", hint="use default or ID=/path/to/agent.sock")
        if not eq:
            path = os.environ.get("SSH_AUTH_SOCK", "")
            if not path:
                raise UsageError(f"--ssh {item}: SSH_AUTH_SOCK is not set: no agent to forward",
                                 hint="start one (eval $(ssh-agent); ssh-add) or give --ssh ID=/path/to/agent.sock")
        import stat
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise UsageError(f"--ssh {item}: {path} is not a socket", hint="give the agent's socket")
        except OSError as e:
            raise UsageError(f"--ssh {item}: {path}: {e.strerror}", hint="give the agent's socket") from None
        out[sid] = os.path.abspath(path)
    return out
