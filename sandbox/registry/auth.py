"""Registry credentials and the 401-driven authentication flow.

Credentials are read, first match wins, from
``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``, ``$XDG_CONFIG_HOME/containers/auth.json``
(containers-auth.json(5)) and ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``). An entry is
``{"auth": base64("user:password")}`` (or ``username``/``password`` fields) under the registry host, a
``host/namespace`` prefix, or for Docker Hub one of its historical keys. ``sbx login`` writes
``~/.docker/config.json`` (or ``--authfile``) atomically with mode 0600 and keeps every other key.

The flow (like Charliecloud's ``Auth_None -> Auth_Bearer_Anon -> Auth_Bearer_IDed/Auth_Basic``): send the
request with what we know; on 401 parse ``WWW-Authenticate``; for ``Bearer`` get a token from the realm
for the scopes the request needs (with Basic credentials if we have them, anonymously otherwise); for
``Basic`` send the credentials. Tokens are cached per scope set until they expire.

Credentials never reach a log or an error message: :class:`Credentials` hides them in its repr.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.image.errors import AuthError, RegistryError
from sandbox.image.fsutil import atomic_write
from sandbox.image.reference import DEFAULT_DOMAIN

DOCKER_HUB_KEYS = ("docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io",
                   "https://registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)
    source: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username=<hidden>, password=<hidden>, source={self.source!r})"

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def docker_config_path() -> str:
    d = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(d, "config.json")


def auth_files() -> list[str]:
    """Where credentials are looked up, in order."""
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    cfg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    files.append(os.path.join(cfg, "containers", "auth.json"))
    files.append(docker_config_path())
    return files


def _keys_for(domain: str, repo_path: str | None) -> list[str]:
    """Candidate keys, most specific first: host/ns/repo, host/ns, host, then URL forms."""
    keys = []
    if repo_path:
        parts = repo_path.split("/")
        for i in range(len(parts), 0, -1):
            keys.append(f"{domain}/{'/'.join(parts[:i])}")
    if domain == DEFAULT_DOMAIN:
        keys += list(DOCKER_HUB_KEYS)
    else:
        keys += [domain, f"https://{domain}", f"http://{domain}", f"https://{domain}/v1/", f"https://{domain}/v2/"]
    return keys


def _decode_entry(entry: Any, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            raw = base64.b64decode(entry["auth"], validate=False).decode()
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"invalid 'auth' entry in {source}", hint="run `sbx login` again") from None
        user, sep, pw = raw.partition(":")
        if not sep:
            raise AuthError(f"invalid 'auth' entry in {source}", hint="run `sbx login` again")
        return Credentials(user, pw, source)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], source)
    return None


def _read_auth_file(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise AuthError(f"cannot read credentials file {path}: {e}") from None
    return doc if isinstance(doc, dict) else None


def find_credentials(domain: str, repo_path: str | None = None, files: list[str] | None = None) -> Credentials | None:
    """The stored credentials for ``domain`` (and repository), or None."""
    for path in files if files is not None else auth_files():
        doc = _read_auth_file(path)
        if not doc:
            continue
        auths = doc.get("auths") or {}
        if not isinstance(auths, dict):
            continue
        for key in _keys_for(domain, repo_path):
            if key in auths:
                creds = _decode_entry(auths[key], path)
                if creds:
                    return creds
    return None


def _login_key(domain: str) -> str:
    return "https://index.docker.io/v1/" if domain == DEFAULT_DOMAIN else domain


def save_login(domain: str, creds: Credentials, path: str | None = None) -> str:
    """Store ``creds`` for ``domain`` in the Docker config (mode 0600, atomic). Returns the file."""
    path = path or docker_config_path()
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    doc = _read_auth_file(path) or {}
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise AuthError(f"{path}: 'auths' is not an object")
    entry = auths.setdefault(_login_key(domain), {})
    if not isinstance(entry, dict):
        entry = auths[_login_key(domain)] = {}
    entry.pop("username", None)
    entry.pop("password", None)
    entry["auth"] = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    atomic_write(path, json.dumps(doc, indent="\t").encode() + b"\n", mode=0o600)
    return path


def remove_login(domain: str, path: str | None = None) -> bool:
    """Forget the credentials for ``domain``; False if there were none."""
    path = path or docker_config_path()
    doc = _read_auth_file(path)
    if not doc or not isinstance(doc.get("auths"), dict):
        return False
    keys = [k for k in _keys_for(domain, None) if k in doc["auths"]]
    if not keys:
        return False
    for k in keys:
        del doc["auths"][k]
    atomic_write(path, json.dumps(doc, indent="\t").encode() + b"\n", mode=0o600)
    return True


# --- WWW-Authenticate --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*(,|$)')
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse RFC 7235 challenges: ``Bearer realm="https://a/token",service="reg",scope="repository:x:pull"``.
    Several challenges may share one header, separated by commas."""
    out: list[Challenge] = []
    pos = 0
    n = len(header)
    while pos < n:
        while pos < n and header[pos] in " ,":
            pos += 1
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < n:
            pm = _PARAM_RE.match(header, pos)
            if not pm:
                break
            key, val = pm.group(1).lower(), pm.group(2)
            if val.startswith('"'):
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            params[key] = val
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


class Authenticator:
    """Per-registry authentication state: the last challenge, credentials and cached tokens.

    ``fetch(url, headers)`` is supplied by the transport and returns ``(status, headers, body bytes)``;
    it is used for the token endpoint (which may be on another host)."""

    def __init__(self, domain: str, creds: Credentials | None, fetch: Any) -> None:
        self.domain = domain
        self.creds = creds
        self._fetch = fetch
        self.challenge: Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    def header(self, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header value for a request needing ``scopes``, if we know the scheme."""
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self.creds.basic() if self.creds else None
        if ch.scheme == "bearer":
            key = " ".join(sorted(scopes))
            tok = self._tokens.get(key)
            if tok and tok[1] > time.monotonic():
                return f"Bearer {tok[0]}"
            return f"Bearer {self._get_token(scopes)}"
        return None

    def on_401(self, www_authenticate: str | None, scopes: tuple[str, ...], sent: str | None) -> None:
        """Learn from a 401 to a request that carried the Authorization header ``sent`` (None if it had
        none). Returns when a retry can succeed; raises :class:`AuthError` when it cannot."""
        challenges = parse_www_authenticate(www_authenticate or "")
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            raise AuthError(f"registry {self.domain} requires an authentication scheme we do not support"
                            f" ({', '.join(c.scheme for c in challenges) or 'none given'})")
        ch = next((c for c in usable if c.scheme == "bearer"), usable[0])
        if ch.scheme == "basic" and not self.creds:
            raise AuthError(f"registry {self.domain} requires authentication", hint=f"run `sbx login {self.domain}`")
        sent_scheme = sent.split(" ", 1)[0].lower() if sent else None
        if sent_scheme != ch.scheme:
            self.challenge = ch  # first contact, or the registry changed its mind: try its way
            return
        if ch.scheme == "basic":
            raise AuthError(f"registry {self.domain} rejected the username or password",
                            hint=f"run `sbx login {self.domain}` again")
        # Our token was refused.
        self._tokens.pop(" ".join(sorted(scopes)), None)
        self.challenge = ch
        if ch.params.get("error") == "invalid_token":
            return  # expired or revoked: one fresh token is worth a try
        if self.creds:
            raise AuthError(f"access to {' '.join(scopes)} on {self.domain} denied",
                            hint="the account may lack permission, or the repository does not exist")
        raise AuthError(f"access to {' '.join(scopes)} on {self.domain} denied",
                        hint=f"the repository may not exist, or may need `sbx login {self.domain}`")

    def _get_token(self, scopes: tuple[str, ...]) -> str:
        assert self.challenge is not None
        p = self.challenge.params
        realm = p.get("realm")
        if not realm:
            raise AuthError(f"registry {self.domain} sent a Bearer challenge without a realm")
        from urllib.parse import urlencode

        q: list[tuple[str, str]] = []
        if p.get("service"):
            q.append(("service", p["service"]))
        for s in sorted(set(scopes)):
            q.append(("scope", s))
        headers = {}
        if self.creds:
            q.append(("account", self.creds.username))
            headers["Authorization"] = self.creds.basic()
        url = realm + ("&" if "?" in realm else "?") + urlencode(q)
        status, _h, body = self._fetch(url, headers)
        if status in (401, 403):
            if self.creds:
                raise AuthError(f"registry {self.domain} rejected the username or password (token service said {status})",
                                hint=f"run `sbx login {self.domain}` again")
            raise AuthError(f"registry {self.domain} requires authentication",
                            hint=f"run `sbx login {self.domain}`")
        if status != 200:
            raise RegistryError(f"token service of {self.domain} answered HTTP {status}")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise RegistryError(f"token service of {self.domain} sent no token")
        try:
            ttl = float(doc.get("expires_in") or 60)
        except (TypeError, ValueError):
            ttl = 60.0
        self._tokens[" ".join(sorted(scopes))] = (token, time.monotonic() + max(ttl - 10, 5))
        return token
