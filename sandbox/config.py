"""Where sbx keeps things, passed explicitly: a `Context` names the data root (images, containers)
and the runtime root (mount points, sockets).

    ctx = config.Context.from_env(root="/srv/sbx")     # the rules below, with overrides
    with config.use(ctx):                              # this thread/task only (a ContextVar)
        ...                                            # config.current() is ctx here

`current()` is the context set with `use()`, else one read from the environment on each call
(nothing is cached: a server that serves several users' requests must not carry one's over).
Nothing here or anywhere in sbx writes `os.environ`; a child process that needs the store gets
it in its argv or its env mapping.

Rules (today's, from runtime/paths.py): persistent data under `root`, else $SBX_ROOT, else
$XDG_DATA_HOME/sbx, else ~/.local/share/sbx; runtime state under `runroot`, else $SBX_RUNROOT,
else $XDG_RUNTIME_DIR/sbx, else /tmp/sbx-UID (su, sudo, ssh and batch jobs have no
XDG_RUNTIME_DIR).  The roots are only the rule: `data_dir()`/`runtime_dir()` create them (0700)
and check they are directories of the caller's that it can write.

Not a dataclass: `dataclasses` imports `re` and `inspect` (~18 ms), and `sbx run`'s path reads
the context (tests/test_api.py guards that path's imports)."""
import contextvars
import os
import stat

from .errors import StateError

DATA_HINT = "SBX_ROOT or --root"
RUNTIME_HINT = "SBX_RUNROOT (--runroot) or XDG_RUNTIME_DIR"


class Context:
    """Where one sbx command (or one server request) keeps its data and runtime state.
    Frozen, compared and hashed by value."""
    __slots__ = ("data_root", "runtime_root")

    def __init__(self, data_root: str, runtime_root: str):
        object.__setattr__(self, "data_root", data_root)
        object.__setattr__(self, "runtime_root", runtime_root)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}: Context is frozen")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}: Context is frozen")

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.data_root, self.runtime_root) == (other.data_root, other.runtime_root)

    def __hash__(self):
        return hash((self.data_root, self.runtime_root))

    def __repr__(self):
        return f"Context(data_root={self.data_root!r}, runtime_root={self.runtime_root!r})"

    def __reduce__(self):
        return (Context, (self.data_root, self.runtime_root))

    def replace(self, **changes):
        return Context(changes.get("data_root", self.data_root), changes.get("runtime_root", self.runtime_root))

    @classmethod
    def from_env(cls, environ=None, root=None, runroot=None):
        """The context the rules give for `environ` (default: os.environ), `root` and `runroot`
        (an empty value counts as unset, as in the environment)."""
        env = os.environ if environ is None else environ
        return cls(os.path.abspath(root) if root else default_data_root(env),
                   os.path.abspath(runroot) if runroot else _runtime_root(env))

    def environ(self):
        """The variables that give a child process this context (`Context.from_env` of them is
        this context): merge them into the env mapping of a process sbx starts that needs the
        store, instead of changing our own environment."""
        return {"SBX_ROOT": self.data_root, "SBX_RUNROOT": self.runtime_root}

    def data_dir(self):
        """The data root, created and checked."""
        return ensure_private_dir(self.data_root, "storage directory", DATA_HINT)

    def runtime_dir(self):
        """The runtime root, created and checked."""
        return ensure_private_dir(self.runtime_root, "runtime directory", RUNTIME_HINT)

    def mount_base(self):
        """An empty directory every sandbox mounts its private tmpfs on, inside its own mount
        namespace: one host directory serves all of them and nothing is left behind."""
        return ensure_private_dir(os.path.join(self.runtime_dir(), "mnt"), "mount directory", RUNTIME_HINT)


def default_data_root(environ=None):
    """$SBX_ROOT, else $XDG_DATA_HOME/sbx, else ~/.local/share/sbx (absolute)."""
    env = os.environ if environ is None else environ
    root = env.get("SBX_ROOT")
    if root:
        return os.path.abspath(root)
    return xdg_data_root(env)


def xdg_data_root(environ=None):
    """Where the data goes when no root is given: $XDG_DATA_HOME/sbx, else ~/.local/share/sbx.
    (`system reset` removes everything in it; in a root given by hand only sbx's entries.)"""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_DATA_HOME") or os.path.join(_home(env), ".local", "share")
    return os.path.abspath(os.path.join(xdg, "sbx"))


def _home(env):
    home = env.get("HOME")
    if home:
        return home
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return "/"


def _runtime_root(env):
    base = env.get("SBX_RUNROOT")
    if not base:
        xdg = env.get("XDG_RUNTIME_DIR")
        base = os.path.join(xdg, "sbx") if xdg else f"/tmp/sbx-{os.geteuid()}"
    return os.path.abspath(base)


def ensure_private_dir(path, what, env_hint):
    """`path`, created 0700 if missing; refused unless it is a directory of ours we can write."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StateError(f"cannot create {what} {path}: {e.strerror}",
                         hint=f"point {env_hint} at a directory you can write") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise StateError(f"{what} {path} is not a directory owned by you",
                         hint=f"remove it, or point {env_hint} elsewhere")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"{what} {path} is not writable",
                         hint=f"point {env_hint} at a directory you can write")
    return path


_current = contextvars.ContextVar("sbx_config", default=None)


def current():
    """The context in force: the innermost `use()`, else the environment's, read now."""
    ctx = _current.get()
    return ctx if ctx is not None else Context.from_env()


class use:
    """`with config.use(ctx):` - `current()` is `ctx` in this thread or task until the block ends.
    (New threads start without it: hand them the context, or call `use` in them.)"""

    def __init__(self, ctx):
        if not isinstance(ctx, Context):
            raise TypeError(f"config.use() takes a Context, not {type(ctx).__name__}")
        self.ctx = ctx
        self._tokens = []

    def __enter__(self):
        self._tokens.append(_current.set(self.ctx))
        return self.ctx

    def __exit__(self, *exc):
        _current.reset(self._tokens.pop())
        return False
