"""`sbx build`: run a parsed Dockerfile (dockerfile.py) step by step into a new image.

Each stage keeps a state: its base image, the layer directories it runs on (top first), the
layers it added, the runtime config and history.  A filesystem-changing step leaves an
overlay upper directory behind; the native diff (sandbox/image/layer.py) turns it into a
layer blob, and the directory itself becomes that layer's unpacked form in the store, so
nothing is unpacked twice.  RUN goes through the same launcher as `sbx run`.  Metadata steps
(ENV, CMD, LABEL, ...) change only the config.

The cache key of a step chains its parent's key, the step's text, the build args in scope
and, for COPY/ADD, a hash of the source content: an unchanged rebuild runs nothing."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import SandboxError, UsageError
from . import dockerfile as dfmod

# What a step's output says when it could not reach the network (apt, curl, wget, pip, getaddrinfo).
# (patterns, compiled on a failure only: a cached build compiles nothing it does not use)
_NETWORK_FAILURE = (r"Temporary failure (in name )?resolution|Could not resolve|Unable to locate package|"
                    r"Name or service not known|bad address|Network is unreachable|No route to host|"
                    r"Failed to establish a new connection|Failed to fetch|Could not connect to|"
                    r"No address associated with hostname|getaddrinfo")
# Commands that give files or processes other owners: they fail with only one id mapped.
_OWNER_CHANGE = (r"\b(chown|chgrp|useradd|adduser|addgroup|groupadd|usermod|setpriv|su|"
                 r"chroot --userspec|install -[og])\b")

DEFAULT_SHELL = ["/bin/sh", "-c"]
MEMO_MAX = 50_000  # context file digests kept between builds
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ARGs Docker defines without a declaration.
PREDEFINED_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                   "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


class BuildError(SandboxError):
    pass


@dataclass
class Options:
    context: str
    dockerfile: str | None = None
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    network: str = "default"     # RUN's network: default (the private network, as `sbx run`), none, host, ...
    labels: dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    userns: str | None = None
    secrets: dict[str, bytes] = field(default_factory=dict)   # --secret id -> content
    ssh: dict[str, str] = field(default_factory=dict)         # --ssh id -> agent socket
    force: str | None = None      # root emulation in RUN: "seccomp", "none"; None: seccomp for single-id builds


@dataclass
class Stage:
    """What a stage has built so far."""
    base: Any                      # store Image or None (scratch)
    lowers: list[str]              # layer dirs, top first (base's + ours)
    layers: list[Any]              # compose.NewLayer added by this stage
    config: dict[str, Any]         # the image config's "config" section
    history: list[dict[str, Any]]
    args: dict[str, str]           # ARG values in scope
    key: str                       # cache key of the last step
    created: str = ""              # time of the last filesystem step (cached steps keep theirs)


class Builder:
    def __init__(self, opts: Options, out=None, run_output=None, warn=None):
        from ..image.store import Store
        from ..runtime import idmap, userns_worker
        self.opts = opts
        self.out = out or (lambda s: sys.stdout.write(s + "\n"))
        self.warn = warn or self.out  # a warning line (sbx build: stderr)
        self.run_output = run_output  # fn(bytes): RUN steps' output, instead of our stdout/stderr
        self.store = Store(workers=userns_worker.mapped)
        self.store.init()
        self.mode = idmap.choose(opts.userns)[0]
        self.owner = "mapped" if self.mode == "helper" else "single"
        if opts.force not in (None, "seccomp", "none"):
            raise UsageError(f"invalid --force value {opts.force!r}", hint="use seccomp or none")
        # Root emulation (issue 9): with one id mapped, chown/setuid/... in RUN report success
        # and do nothing, so package installs and useradd work; files all stay root's.
        self.emulate = opts.force == "seccomp" or (opts.force is None and self.mode != "helper")
        self._told_emulation = False
        self._network = None
        self.context = os.path.realpath(opts.context)
        if not os.path.isdir(self.context):
            raise UsageError(f"build context {opts.context!r} is not a directory")
        self.ignore = _dockerignore(self.context)
        self.done: dict[int, Stage] = {}
        self._memo = None
        self._memo_text = ""
        self._current = -1  # the index of the stage being built
        self.step = 0
        self.total = 0

    # --- top level ----------------------------------------------------------------------------

    def build(self):
        path = self.opts.dockerfile or os.path.join(self.context, "Dockerfile")
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}", hint="give the Dockerfile with -f") from None
        df = dfmod.parse(text, name=os.path.basename(path))
        target = df.target(self.opts.target)
        self.df = df
        stages = self._needed(target)
        self.total = sum(len(s.instructions) + 1 for s in stages)
        for st in stages:  # every refusal the file itself earns comes before any work
            if st.platform is not None:
                self._check_platform(st, self._global_args())
            for instr in st.instructions:
                self._preflight(instr)
        self.worker = _LazyWorker(self.mode)
        # The shared content lock for the whole build: another sbx command's clean-up (which
        # takes the lock exclusively) must not take the steps' temp directories for leftovers.
        try:
            with self.store.adding():
                for st in stages:
                    self.done[st.index] = self._stage(st)
                final = self.done[target.index]
                self.worker.release()  # it exits while the image is written; close() reaps it
                if self.opts.labels:
                    final.config.setdefault("Labels", {}).update(self.opts.labels)
                return self._finish(final)
        finally:
            self._save_memo()
            self.worker.close()

    def _needed(self, target):
        """The stages the target needs, in file order: BuildKit builds only those reachable from
        the target through FROM, COPY --from and RUN --mount from=, the ONBUILD triggers its
        base brings included (ONBUILD COPY --from=stage), so an unused stage that would fail
        does not fail the build."""
        gargs = self._global_args()
        need = {target.index}
        for st in reversed(self.df.stages[: target.index + 1]):
            if st.index not in need:
                continue
            where = f"{self.df.name}:{st.line}"
            base = dfmod.expand(st.base, gargs, escape=self.df.escape, where=where)
            refs = [base]
            for instr in self._base_triggers(base, st):
                refs.extend(self._stage_refs(instr, {}, where))
            args = dict(gargs)
            for instr in st.instructions:
                where = f"{self.df.name}:{instr.line}"
                if instr.cmd == "ARG":
                    self._do_arg_values(args, instr, args, where, gargs)
                else:
                    refs.extend(self._stage_refs(instr, args, where))
            for ref in refs:
                dep = self.df.stage(ref, before=st.index)
                if dep is not None:
                    need.add(dep.index)
        return [st for st in self.df.stages if st.index in need]

    def _stage_refs(self, instr, args, where):
        """What an instruction reads from another stage or image: COPY/ADD --from, RUN --mount from=."""
        if instr.cmd in ("COPY", "ADD") and instr.flags.get("from"):
            return [self._x(instr.flags["from"], args, where)]
        if instr.cmd == "RUN":
            mounts = (_checked(lambda v: dfmod.parse_mount(v, args, escape=self.df.escape), m, where)
                      for m in instr.flags.get("mount", ()))
            return [m["from"] for m in mounts if m.get("from")]
        return []

    def _base_triggers(self, ref, st):
        """The ONBUILD triggers a stage runs first, parsed: the ONBUILD lines of the stage it is
        FROM, or those in the config of a base image already in the store (one pulled later has
        its triggers' stages built when they run, see _stage_lowers)."""
        prev = self.df.stage(ref, before=st.index)
        if prev is not None:
            texts = [i.args[0] for i in prev.instructions if i.cmd == "ONBUILD" and i.args]
        elif ref == "scratch":
            return []
        else:
            try:
                image = self.store.resolve(ref)
            except SandboxError:
                return []
            texts = (image.config.get("config") or {}).get("OnBuild") or []
        return [self._trigger(t, ref) for t in texts]

    @staticmethod
    def _trigger(text, base_ref):
        return dfmod.parse(f"FROM scratch\n{text}\n", name=f"ONBUILD in {base_ref}").stages[0].instructions[0]

    def _preflight(self, instr):
        """Refuse a flag sbx does not carry out (never accept and ignore it), and a literal value
        Docker would refuse; values holding a variable are checked again once expanded."""
        where = f"{self.df.name}:{instr.line}"
        if instr.trigger is not None:  # stored for a child build, which checks it when it runs it
            return
        for flag, value in instr.flags.items():
            if (instr.cmd, flag) in _UNSUPPORTED and value not in _UNSUPPORTED[instr.cmd, flag][0]:
                shown = f"--{flag}" if value is True else f"--{flag}={value if isinstance(value, str) else value[0]}"
                raise BuildError(f"{where}: {instr.cmd} {shown} is not supported yet",
                                 hint=_UNSUPPORTED[instr.cmd, flag][1])
        if "chmod" in instr.flags:
            self._check(dfmod.parse_chmod, instr.flags["chmod"], where)
        for value in instr.flags.get("mount", ()) if instr.cmd == "RUN" else ():
            from . import mounts
            m = _checked(dfmod.parse_mount, value, where)
            mounts.check(m, f"{where}: --mount={value}")
            sid = m.get("id", "default")
            if m["type"] == "ssh" and "$" not in sid and sid not in self.opts.ssh:
                raise mounts.no_ssh(sid, where)
        words = {"STOPSIGNAL": dfmod.check_signal, "USER": dfmod.check_user, "EXPOSE": dfmod.parse_ports}
        for a in instr.args if instr.cmd in words else ():
            self._check(words[instr.cmd], a, where)

    def _check_platform(self, st, gargs):
        """FROM --platform: sbx builds for the host only, so any other platform is refused, not ignored."""
        from ..image import platform as plat
        where = f"{self.df.name}:{st.line}"
        host = plat.host()
        auto = {f"{k}PLATFORM": str(host) for k in ("BUILD", "TARGET")}  # BuildKit's automatic ARGs
        value = dfmod.expand(st.platform, {**auto, **gargs}, escape=self.df.escape, where=where)
        try:
            want = plat.parse(value)
        except SandboxError as e:
            raise BuildError(f"{where}: {e.msg}", hint=e.hint) from None
        if not host.matches({"os": want.os, "architecture": want.architecture, "variant": want.variant}):
            raise BuildError(f"{where}: FROM --platform={value} is not supported yet: sbx builds for this "
                             f"machine's platform, {host}", hint=f"rewrite the step without --platform, or with "
                             f"--platform={host}")

    @staticmethod
    def _check(fn, value, where):
        """fn(value) unless value holds a variable (checked after expansion); the error names the line."""
        if "$" in value:
            return None
        return _checked(fn, value, where)

    def _say(self, text):
        self.step += 1
        if not self.opts.quiet:
            self.out(f"STEP {self.step}/{self.total}: {text}")

    def _global_args(self):
        """ARGs before the first FROM, with --build-arg values (usable in FROM lines and, once
        redeclared, in a stage)."""
        args = {}
        for instr in self.df.global_args:
            for a in instr.args:
                name, eq, default = a.partition("=")
                if name in self.opts.build_args:
                    args[name] = self.opts.build_args[name]
                elif eq:
                    args[name] = dfmod.expand(default, args, escape=self.df.escape)
        return args

    # --- one stage ----------------------------------------------------------------------------

    def _stage(self, st):
        gargs = self._global_args()
        base_ref = dfmod.expand(st.base, gargs, escape=self.df.escape, where=f"{self.df.name}:{st.line}")
        self._say(f"FROM {base_ref}" + (f" AS {st.name}" if st.name else ""))
        try:
            state = self._from(base_ref, st)
        except SandboxError as e:  # which FROM: the line, as every other step's error has
            e.msg = f"{self.df.name}:{st.line}: {e}"
            e.args = (e.msg,)
            raise
        self._current = st.index
        for trigger in state.config.pop("OnBuild", None) or []:
            instr = self._trigger(trigger, base_ref)
            self._preflight(instr)
            self._step(state, instr, onbuild=True)
        for instr in st.instructions:
            self._step(state, instr)
        return state

    def _from(self, ref, st):
        if ref == "scratch":
            return Stage(None, [], [], {"Env": [f"PATH={DEFAULT_PATH}"]}, [], {}, _key("scratch"),
                         "1970-01-01T00:00:00Z")
        prev = self.df.stage(ref, before=st.index)
        if prev is not None and prev.index in self.done:
            p = self.done[prev.index]
            return Stage(p.base, list(p.lowers), list(p.layers), json.loads(json.dumps(p.config)),
                         list(p.history), {}, p.key, p.created)
        from ..runtime import image_root
        root = image_root.prepare(ref, pull="always" if self.opts.pull else "missing", userns=self.opts.userns)
        image = self.store.get(root.image_id)
        cfg = json.loads(json.dumps(image.config.get("config") or {}))
        if "PATH" not in _env_dict(cfg.get("Env")):  # BuildKit: PATH is always set in the image
            cfg["Env"] = list(cfg.get("Env") or []) + [f"PATH={DEFAULT_PATH}"]
        return Stage(image, list(root.lowers), [], cfg, [], {}, _key("from", image.id),
                     image.created or "1970-01-01T00:00:00Z")

    def _step(self, state, instr, onbuild=False):
        cmd = instr.cmd
        where = f"{self.df.name}:{instr.line}"
        if not onbuild:
            self._say(instr.original.strip().split("\n")[0][:200])
        env = _env_dict(state.config.get("Env"))
        scope = dict(state.args)
        words_env = {**scope, **env}
        handler = getattr(self, "_do_" + cmd.lower(), None)
        if handler is None:
            raise BuildError(f"{where}: {cmd} is not supported")
        handler(state, instr, words_env, where)

    # --- metadata steps -------------------------------------------------------------------------

    def _meta(self, state, instr, created_by=None):
        # Keyed by the config the step leaves (so an ARG value counts only where it is used,
        # as in Docker).  Metadata steps take the time of the step before, so a fully cached
        # rebuild yields the same config, hence the same image id, as Docker's does.
        state.key = _key(state.key, instr.original, state.config if instr.cmd != "ARG" else None)
        state.history.append({"created_by": created_by or instr.original.strip(), "empty_layer": True,
                              "created": state.created})

    def _x(self, word, env, where):
        return dfmod.expand(word, env, escape=self.df.escape, where=where)

    def _do_arg(self, state, instr, env, where):
        self._do_arg_values(state.args, instr, env, where, self._global_args())
        self._meta(state, instr)

    def _do_arg_values(self, args, instr, env, where, gargs):
        """ARG's names into `args`: a --build-arg, else the default (expanded with the values from
        before the instruction, as BuildKit does for every pair of one line), else a global ARG."""
        env = dict(env)
        for a in instr.args:
            name, eq, default = a.partition("=")
            if name in self.opts.build_args:
                args[name] = self.opts.build_args[name]
            elif eq:
                args[name] = self._x(default, env, where)
            elif name in gargs:
                args[name] = gargs[name]

    def _do_env(self, state, instr, env, where):
        # Every value of the line is expanded with the environment from before the instruction
        # (Docker's rule: ENV a=1 b=$a gives b the earlier a).
        envd = _env_dict(state.config.get("Env"))
        for pair in instr.args:
            k, _, v = pair.partition("=")
            envd[k] = self._x(v, env, where)
        state.config["Env"] = [f"{k}={v}" for k, v in envd.items()]
        self._meta(state, instr)

    def _do_label(self, state, instr, env, where):
        labels = state.config.setdefault("Labels", {})
        for pair in instr.args:
            k, _, v = pair.partition("=")
            labels[self._x(k, env, where)] = self._x(v, env, where)
        self._meta(state, instr)

    def _do_maintainer(self, state, instr, env, where):
        state.config.setdefault("Labels", {})["maintainer"] = " ".join(instr.args)
        self._meta(state, instr)

    def _do_workdir(self, state, instr, env, where):
        d = self._x(instr.args[0], env, where)
        state.config["WorkingDir"] = os.path.normpath(os.path.join(state.config.get("WorkingDir") or "/", d))
        self._meta(state, instr)

    def _do_user(self, state, instr, env, where):
        state.config["User"] = _checked(dfmod.check_user, self._x(instr.args[0], env, where), where)
        self._meta(state, instr)

    def _do_expose(self, state, instr, env, where):
        ports = state.config.setdefault("ExposedPorts", {})
        for p in dfmod.expand_words(instr.args, env, escape=self.df.escape, where=where):
            ports.update(dict.fromkeys(_checked(dfmod.parse_ports, p, where), {}))
        self._meta(state, instr)

    def _do_volume(self, state, instr, env, where):
        vols = state.config.setdefault("Volumes", {})
        for v in dfmod.expand_words(instr.args, env, escape=self.df.escape, where=where):
            vols[v] = {}
        self._meta(state, instr)

    def _command(self, state, instr):
        if instr.json_form:
            return list(instr.args)
        return list(state.config.get("Shell") or DEFAULT_SHELL) + [" ".join(instr.args)]

    def _do_cmd(self, state, instr, env, where):
        state.config["Cmd"] = self._command(state, instr)
        self._meta(state, instr)

    def _do_entrypoint(self, state, instr, env, where):
        state.config["Entrypoint"] = self._command(state, instr)
        state.config.pop("Cmd", None) if not instr.json_form else None
        self._meta(state, instr)

    def _do_shell(self, state, instr, env, where):
        state.config["Shell"] = list(instr.args)
        self._meta(state, instr)

    def _do_stopsignal(self, state, instr, env, where):
        state.config["StopSignal"] = _checked(dfmod.check_signal, self._x(instr.args[0], env, where), where)
        self._meta(state, instr)

    def _do_healthcheck(self, state, instr, env, where):
        state.config["Healthcheck"] = dfmod.healthcheck(instr)
        self._meta(state, instr)

    def _do_onbuild(self, state, instr, env, where):
        state.config.setdefault("OnBuild", []).append(instr.args[0] if instr.args else instr.original)
        self._meta(state, instr)

    # --- filesystem steps -----------------------------------------------------------------------

    def _cached(self, state, key, created_by):
        """Apply a cached step (layer or not); True if there was one."""
        if self.opts.no_cache:
            return False
        from ..image.compose import NewLayer
        doc = self._cache_get(key)
        if doc is None:
            return False
        lay = doc["layer"]
        d = self.store.layer_path(lay["diff_id"], self.owner)
        if not self.store.blobs.has(lay["digest"]) or not os.path.isfile(os.path.join(d, "meta.json")):
            return False
        state.layers.append(NewLayer(lay["digest"], lay["diff_id"], lay["size"]))
        state.lowers.insert(0, os.path.join(d, "root"))
        state.created = doc.get("created") or state.created
        state.history.append({"created_by": created_by, "created": state.created})
        state.key = key
        if not self.opts.quiet:
            self.out(" ---> CACHED")
        return True

    def _cache_path(self, key):
        return os.path.join(self.store.root, "buildcache", self.owner, key)

    def _cache_get(self, key):
        try:
            with open(self._cache_path(key)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _cache_put(self, key, layer, created):
        from ..image.fsutil import atomic_write
        path = self._cache_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Not fsynced: an entry is derived data, read defensively (an empty or torn one, or one
        # whose blob or layer did not survive a crash, is a miss: the step runs again), while
        # what holds the data, the blob and the layer, is made durable by the store.
        atomic_write(path, json.dumps({"layer": layer, "created": created}).encode(), durable=False)

    def _new_dirs(self):
        from ..image.fsutil import tmp_name
        d = tmp_name(self.store.tmp_dir, "build-")
        os.mkdir(d, 0o700)
        os.mkdir(os.path.join(d, "upper"), 0o755)
        os.mkdir(os.path.join(d, "work"), 0o700)
        return d

    def _commit_upper(self, state, tmpdir, key, created_by):
        """The step's upper directory -> a layer blob in the store, and the directory itself
        -> that layer's unpacked form."""
        from ..image.commit import layer_from_upper
        lay = layer_from_upper(self.store, self.worker, os.path.join(tmpdir, "upper"), state.lowers, self.owner)
        from ..image.compose import now_rfc3339
        state.created = now_rfc3339()
        self._cache_put(key, {"diff_id": lay.diff_id, "digest": lay.digest, "size": lay.size}, state.created)
        state.layers.append(lay)
        state.lowers.insert(0, os.path.join(self.store.layer_path(lay.diff_id, self.owner), "root"))
        state.history.append({"created_by": created_by, "created": state.created})
        state.key = key
        return lay

    def _do_run(self, state, instr, env, where):
        from . import mounts
        created_by = instr.original.strip()
        mlist = mounts.parse(instr.flags.get("mount", ()), env, self.df.escape, state.config.get("WorkingDir"), where)
        key = _key(state.key, instr.original, sorted(state.args.items()), *mounts.key_parts(self, mlist, where))
        if self._cached(state, key, created_by):
            return
        if instr.json_form:
            argv = list(instr.args)
        else:
            script, heredoc = dfmod.shell_command(instr)
            argv = list(state.config.get("Shell") or DEFAULT_SHELL) + [script]
            if heredoc is not None:
                raise BuildError(f"{where}: RUN with a '#!' heredoc script is not supported yet")
        network = self._step_network(instr.flags.get("network"), where)
        self.worker.start_ahead()  # the step's commit needs it: its start-up overlaps the step
        run_env = {**state.args, **_env_dict(state.config.get("Env"))}
        tmpdir = self._new_dirs()
        prepared = None
        try:
            prepared = mounts.prepare(self, mlist, tmpdir, where)
            if self.emulate:
                mounts.apt_as_root(state.lowers, tmpdir, prepared)
            for note in prepared.notes:
                self.out(f"sbx: warning: {note}")
            self._run(state, argv, {**run_env, **prepared.env}, network, tmpdir, where,
                      volumes=prepared.volumes, tmpfs=prepared.tmpfs)
            if prepared.targets:
                self.worker.call("sandbox.build.placement:remove_mount_stubs", upper=os.path.join(tmpdir, "upper"),
                                 lowers=state.lowers, targets=prepared.targets)
            self._commit_upper(state, tmpdir, key, created_by)
        finally:
            if prepared is not None:
                prepared.close()
            self.worker.call("sandbox.image.store:remove_path", path=tmpdir)

    def _step_network(self, flag, where=""):
        """RUN --network=none|host as asked; default (or no flag): the build's --network, by
        default the private network `sbx run` gives images (slirp4netns or pasta; where neither
        can work, none, said once), resolved on the first step that needs it."""
        if flag == "host" and self.opts.network != "host":
            # BuildKit's network.host entitlement: the Dockerfile alone cannot hand a step the
            # host's network (its loopback services, abstract sockets); the one building can.
            raise BuildError(f"{where}: RUN --network=host needs the host's network granted to the build",
                             hint="build with --network host if you trust this Dockerfile with your network")
        if flag in ("none", "host"):
            return flag
        text = self.opts.network or "default"
        if text in ("none", "host"):
            return text
        if self._network is None:
            from ..network import modes
            m = modes.resolve(text, default=text == "default", warn=lambda line: self.out(f"sbx: warning: {line}"))
            self._network = m.kind if m.kind in ("none", "host") else m
        return self._network

    def _run(self, state, argv, env, network, tmpdir, where, volumes=(), tmpfs=()):
        from ..runtime import spec as specmod
        from ..runtime.image_root import ImageRoot
        if not state.lowers:
            raise BuildError(f"{where}: RUN needs a base image with a shell; this stage is FROM scratch")
        root = ImageRoot("build", None, list(state.lowers), {"User": state.config.get("User") or None,
                                                             "WorkingDir": state.config.get("WorkingDir") or None})
        seccomp = None
        if self.emulate:
            from ..runtime import seccomp as seccompmod
            seccomp = seccompmod.root_emulation_profile()
            if not self._told_emulation and not self.opts.quiet:
                self._told_emulation = True
                why = "this build maps a single id (no subordinate id range)" if self.mode != "helper" else \
                    "--force=seccomp"
                self.out(f"sbx: note: {why}: RUN steps emulate root: chown, setuid, setgroups, mknod of "
                         f"devices and the like report success and change nothing, so every file stays owned "
                         f"by root (--force=none turns this off)")
        spec = specmod.build(argv, image=root, entrypoint="", env=env, network=network, userns=self.opts.userns,
                             volumes=volumes, tmpfs=tmpfs, seccomp=seccomp,
                             container_id=os.urandom(32).hex(), upper=os.path.join(tmpdir, "upper"),
                             cwd=state.config.get("WorkingDir") or None)
        # The step's overlay is mounted volatile: fsync in it is a no-op.  dpkg fsyncs every file
        # it unpacks (~5 ms each here); what makes a step durable is its layer blob, fsynced
        # when stored, and a step that fails or is interrupted is thrown away.
        spec["sbx"]["volatile"] = True
        hooks = ()
        if spec["sbx"]["network"].get("mode", "none") not in ("none", "host"):
            from ..network import hooks as nethooks
            hooks = nethooks.hooks_for(spec)
        relay = _Relay(self.opts.quiet, self.run_output)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        from .. import interrupts
        from ..runtime.process import SandboxProcess
        try:  # Ctrl-C is held from before the launch ...
            p = SandboxProcess.launch(spec, stdio=(devnull, *relay.write_fds), hooks=hooks, hold=interrupts.HELD)
        except BaseException:
            relay.close()
            raise
        finally:
            os.close(devnull)
            relay.started()
        try:  # ... raised once the wait begins, which kills and reaps the step's sandbox first
            code = p.wait(forward=())
        finally:
            p.close()
            relay.close()
        if code != 0:
            msg = f"{where}: RUN {' '.join(argv[-1:])[:120]!r} returned a non-zero code: {code}"
            if re.search(_NETWORK_FAILURE, relay.tail()):
                what, hint = _network_words(spec["sbx"]["network"])
                raise BuildError(f"{msg}; its output looks like a network failure, and the step had {what}",
                                 hint=hint)
            if self.mode != "helper" and not self.emulate and re.search(_OWNER_CHANGE, " ".join(argv)):
                # chown to another id fails with a bare EINVAL where only one id is mapped.
                raise BuildError(msg + "; this build maps a single id (no subordinate id range), so files and "
                                 "processes cannot change to other owners ('Invalid argument')",
                                 hint="add a range for your user: sudo usermod --add-subuids 100000-165535 "
                                      "--add-subgids 100000-165535 $USER (and install uidmap), then build again, "
                                      "or build without --force=none (root emulation)")
            raise BuildError(msg, hint="nothing of this step was stored; fix the command and build again")

    def _do_copy(self, state, instr, env, where, add=False):
        dest = self._x(instr.dest, env, where)
        if not dest.startswith("/"):
            dest = os.path.join(state.config.get("WorkingDir") or "/", dest)
        from_ref = instr.flags.get("from")
        roots = self._stage_lowers(self._x(from_ref, env, where), where) if from_ref else None
        chown = instr.flags.get("chown")
        chown = self._x(chown, env, where) if chown else None
        chmod = instr.flags.get("chmod")
        chmod = _checked(dfmod.parse_chmod, self._x(chmod, env, where), where) if chmod else None
        ignore = self.ignore if roots is None else None
        plan, named = [], []
        for s in instr.sources:
            if isinstance(s, dfmod.Heredoc):
                content = dfmod.expand_heredoc(s, env, where=where) if s.expand else s.content
                plan.append(["heredoc", s.name, content])
                continue
            s = self._x(s, env, where)
            plan.append(["url" if add and s.startswith(("http://", "https://")) else "path", s, None])
            named.append(s)
        # The cache key: the expanded sources and destination, and the content they name.
        src_roots = roots if roots is not None else [self.context]  # [] is an empty stage, not the context
        content = self.hash_sources(src_roots, named, ignore, where, context=roots is None)
        key = _key(state.key, instr.original, dest, plan, content)
        created_by = instr.original.strip()
        if self._cached(state, key, created_by):
            return
        tmpdir = self._new_dirs()
        try:
            upper = os.path.join(tmpdir, "upper")
            unset = self.worker.call("sandbox.build.placement:copy_into", upper=upper, lowers=state.lowers, plan=plan,
                                     dest=dest, context=self.context, roots=roots, ignore=ignore, add=add,
                                     chmod=chmod, where=where, keep_owners=self.worker.in_userns,
                                     owner=self._chown(chown, state, where) if chown else None,
                                     host_network=self.opts.network == "host")
            if unset:
                self._set_xattrs(upper, unset, where)
            self._commit_upper(state, tmpdir, key, created_by)
        finally:
            self.worker.call("sandbox.image.store:remove_path", path=tmpdir)

    def _set_xattrs(self, upper, unset, where):
        """Extended attributes the placement could not set ([path, name, value hex, why]).  A
        file capability refused outside any user namespace (one id mapped: the placement runs in
        sbx's own process) is set by a worker in a user namespace whose root is this user, where
        the kernel stores it as a RUN step's setcap does; whatever still fails is said, file
        named, never dropped in silence."""
        caps = [u for u in unset if u[1] == "security.capability"]
        failed = [[path, k, why] for path, k, _, why in unset if k != "security.capability"]
        if caps and not self.worker.in_userns and os.geteuid() != 0:
            from ..runtime import userns_worker
            with userns_worker.UsernsWorker() as w:
                failed += w.call("sandbox.build.placement:set_xattrs", upper=upper, items=caps, root_uid=os.geteuid())
        else:
            failed += [[path, k, why] for path, k, _, why in caps]
        for path, k, why in failed:
            self.warn(f"sbx: warning: {where}: /{path}: its {k} could not be kept: {why}")

    def hash_sources(self, roots, sources, ignore, where, context, follow=False):
        """The digest of what sources name (a step's cache key).  The context is read here, with
        its owners left out (what COPY makes of it is root's whatever they are), through the
        stat-keyed memo of file digests, so a fully cached build reads no unchanged file and
        starts no worker.  A stage or image is read by the worker, once: its roots are store
        layer directories, named by their content's digest, so the result is kept by them."""
        if context:
            from .placement import hash_sources
            try:
                return hash_sources(roots, sources, ignore, where, owners=False, memo=self._context_memo(),
                                    follow=follow)
            except PermissionError:  # readable only as root of the build's namespace
                pass
        layers = os.path.join(self.store.layers_dir, "")
        kept = None
        if not context and all(r.startswith(layers) for r in roots):
            kept = os.path.join(self.store.root, "buildcache", self.owner, "sources",
                                _key("sources", roots, sources, ignore, *(["follow"] if follow else [])))
            try:
                with open(kept) as f:
                    digest = f.read()
                if len(digest) == 64:
                    return digest
            except OSError:
                pass
        digest = self.worker.call("sandbox.build.placement:hash_sources", roots=roots, sources=sources,
                                  ignore=ignore, where=where, owners=not context, follow=follow)
        if kept is not None:
            from ..image.fsutil import atomic_write
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            atomic_write(kept, digest.encode(), durable=False)
        return digest

    def _memo_path(self):
        return os.path.join(self.store.root, "buildcache", self.owner, "context-digests.json")

    def _context_memo(self):
        """{"dev:ino": [size, mtime_ns, ctime_ns, sha256]} of context files hashed before (by
        earlier builds too): placement.hash_sources reads and fills it."""
        if self._memo is None:
            try:
                with open(self._memo_path()) as f:
                    self._memo = json.load(f)
            except (OSError, ValueError):
                self._memo = {}
            if not isinstance(self._memo, dict):
                self._memo = {}
            self._memo_text = json.dumps(self._memo, sort_keys=True)
        return self._memo

    def _save_memo(self):
        """Write the memo back when a build changed it (no fsync: losing it costs a re-read);
        at most MEMO_MAX entries, this build's kept first."""
        if self._memo is None:
            return
        text = json.dumps(self._memo, sort_keys=True)
        if text == self._memo_text:
            return
        memo = self._memo
        if len(memo) > MEMO_MAX:
            memo = dict(list(memo.items())[-MEMO_MAX:])  # insertion order: the newest last
            text = json.dumps(memo, sort_keys=True)
        from ..image.fsutil import atomic_write
        try:
            os.makedirs(os.path.dirname(self._memo_path()), exist_ok=True)
            atomic_write(self._memo_path(), text.encode(), durable=False)
        except OSError:
            pass  # a memo only saves reading files again

    def _do_add(self, state, instr, env, where):
        self._do_copy(state, instr, env, where, add=True)

    def _stage_lowers(self, ref, where):
        st = self.df.stage(ref)
        if st is not None:
            if st.index not in self.done and st.index < self._current:
                # Named by a trigger of a base image pulled during the build: built now.
                self.total += len(st.instructions) + 1
                outer = self._current
                self.done[st.index] = self._stage(st)
                self._current = outer
            if st.index not in self.done:
                raise BuildError(f"{where}: stage {ref!r} is not built before this one")
            return list(self.done[st.index].lowers)
        from ..runtime import image_root
        try:
            return image_root.prepare(ref, userns=self.opts.userns).lowers
        except SandboxError as e:  # no such stage nor image: the error names the line, as FROM's does
            e.msg = f"{where}: --from={ref}: {e.msg}"
            e.args = (e.msg,)
            raise

    def _chown(self, chown, state, where):
        """--chown's (uid, gid), applied by the placement itself (never by a path walk that a
        symlink could lead out of the upper); None when nothing is to change."""
        from ..runtime import spec as specmod
        uid, gid, _, _ = specmod.resolve_user(state.lowers, chown)
        if (uid, gid) == (0, 0):
            return None
        if not self.worker.in_userns:
            self.out(f"sbx: warning: {where}: --chown={chown} cannot be kept with a single mapped id: "
                     "files stay owned by root (configure a subuid range to keep owners)")
            return None
        return [uid, gid]

    # --- the image --------------------------------------------------------------------------------

    def _finish(self, state):
        from ..image import reference as refs
        from ..image.compose import compose
        with self.store.adding():
            mdigest = compose(self.store, state.base, state.layers, state.config, state.history,
                              created=state.created)
            names = []
            for t in self.opts.tags:
                r = refs.parse(t)
                names.append(r.tagged)
            image = self.store.add_image(mdigest, names=names)
        for n in names:  # Docker's builder tags its result: one tag event per -t
            self.store.event("tag", image.id, refs.parse(n).familiar())
        return image


# --- helpers ---------------------------------------------------------------------------------------

_REWRITE = "rewrite the step without it"
#: (instruction, flag) -> (values that need nothing sbx lacks, hint): every other value is refused.
_UNSUPPORTED = {
    ("RUN", "security"): (("sandbox",), _REWRITE + "; a build step always runs sandboxed"),
    ("COPY", "exclude"): ((), _REWRITE + ": list the sources to copy, or leave files out with .dockerignore"),
    ("ADD", "exclude"): ((), _REWRITE + ": list the sources to add, or leave files out with .dockerignore"),
    ("COPY", "parents"): ((False,), _REWRITE + ": COPY each source directory to its full destination path"),
    ("ADD", "checksum"): ((), _REWRITE + ": download with RUN and check the digest there (sha256sum -c)"),
    ("ADD", "unpack"): ((), _REWRITE + ": ADD unpacks a local tar; fetch and unpack a remote one with RUN"),
    ("ADD", "keep-git-dir"): ((), _REWRITE + ": clone the repository with RUN git clone"),
}


def _network_words(net):
    """(which network a step had, a hint) for a failure that looks like a network one."""
    mode = net.get("mode", "none")
    if mode == "none":
        return ("no network (none)", "give the step a network: build with --network default (the default: a private "
                "network, as sbx run gives), or write RUN --network=default or --network=host for the step")
    if mode == "host":
        return ("the host's network (host)", "check that this machine reaches the address (its DNS, proxy, routes)")
    return (f"the default private network ({mode})", f"{mode} reaches what the host reaches, through the host's "
            "resolvers: check that this machine reaches the address, or try --network host")


class _LazyWorker:
    """The build's userns worker (runtime.userns_worker), started on first use: a fully cached
    build needs none.  An uncached step starts it ahead (start_ahead) so that its start-up
    (an interpreter in a new user namespace, the imports its calls need) overlaps the step's
    own work instead of delaying the step's commit."""

    def __init__(self, mode):
        self.mode = mode
        self.in_userns = mode == "helper"
        self._w = None
        self._warming = None  # the thread making the worker's first (warm-up) call
        self._released = False

    def _start(self):
        if self._w is None:
            from ..runtime import userns_worker
            self._w = userns_worker.start(self.mode)
        return self._w

    def start_ahead(self):
        """Start the worker now, without waiting for it: a thread waits for it to be up and
        to have imported what a step's commit needs; the next call waits for that thread
        (the worker serves one call at a time).  In-process (single id): nothing to do."""
        if self._w is not None or not self.in_userns:
            return
        import threading
        w = self._start()

        def warm():
            try:
                w.call("sandbox.build.placement:warm_up")
            except Exception:  # noqa: BLE001 - a worker that failed fails the next real call, which says why
                pass
        self._warming = threading.Thread(target=warm, daemon=True)
        self._warming.start()

    def _settled(self):
        if self._warming is not None:
            self._warming.join()
            self._warming = None

    def call(self, fn, **kw):
        if self._released:
            self.close()
        w = self._start()
        self._settled()
        return w.call(fn, **kw)

    def release(self):
        """No more calls: the worker is told so (end of its input) and exits meanwhile, off
        the build's path; close() reaps it (a later call would start another)."""
        if self._w is not None and self.in_userns:
            self._settled()
            self._w.stdin.close()
            self._released = True

    def close(self):
        if self._w is not None:
            self._settled()
            self._w.close()
            self._w = None
        self._released = False


class _Relay:
    """A RUN step's stdout and stderr, copied to ours (nowhere with -q) by a thread, the last
    32 KiB kept to tell what a failure looks like."""

    KEEP = 32 << 10

    def __init__(self, quiet: bool, sink=None):
        import threading
        self.quiet, self.sink = quiet, sink
        self._tail = bytearray()
        self.read_fds, self.write_fds = [], []
        for _ in range(2):
            r, w = os.pipe2(os.O_CLOEXEC)
            self.read_fds.append(r)
            self.write_fds.append(w)
        self._thread = threading.Thread(target=self._pump, daemon=True)

    def started(self):
        """The child holds the write ends now: ours close, the copying starts."""
        for w in self.write_fds:
            os.close(w)
        self.write_fds = []
        if self.read_fds:
            self._thread.start()

    def _pump(self):
        import selectors
        sel = selectors.DefaultSelector()
        for r, to in zip(self.read_fds, (1, 2)):
            sel.register(r, selectors.EVENT_READ, to)
        open_fds = len(self.read_fds)
        while open_fds:
            for key, _ in sel.select():
                try:
                    data = os.read(key.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fd)
                    open_fds -= 1
                    continue
                self._tail += data
                del self._tail[:-self.KEEP]
                if self.sink is not None and not self.quiet:
                    self.sink(data)
                elif not self.quiet:
                    view = memoryview(data)
                    try:
                        while view:
                            view = view[os.write(key.data, view):]
                    except OSError:
                        pass
        sel.close()

    def close(self):
        for w in self.write_fds:
            os.close(w)
        self.write_fds = []
        if self._thread.is_alive():
            self._thread.join(10)
        if not self._thread.is_alive():
            for r in self.read_fds:
                os.close(r)
            self.read_fds = []

    def tail(self) -> str:
        return self._tail.decode("utf-8", "replace")


def _checked(fn, value, where):
    try:
        return fn(value)
    except UsageError as e:
        raise BuildError(f"{where}: {e.msg}", hint=e.hint) from None


def _key(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _env_dict(env_list):
    out = {}
    for e in env_list or ():
        k, _, v = e.partition("=")
        out[k] = v
    return out


def _dockerignore(context):
    try:
        with open(os.path.join(context, ".dockerignore")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pats = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line[1:] if neg else line).lstrip("/")
        pats.append((neg, pat))
    return pats


def ignored(rel, patterns):
    """.dockerignore semantics: the last matching pattern wins; a pattern also matches
    everything below a matching directory; '**' matches any number of directories."""
    out = False
    for neg, pat in patterns:
        if _match(rel, pat):
            out = not neg
    return out


def _match(rel, pat):
    parts = rel.split("/")
    for i in range(len(parts), 0, -1):
        prefix = "/".join(parts[:i])
        if fnmatch.fnmatchcase(prefix, pat) or ("**" in pat and fnmatch.fnmatchcase(prefix, pat.replace("**/", "*"))):
            return True
    return False
