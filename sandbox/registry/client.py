"""OCI distribution-spec client: manifests, blobs, uploads. One :class:`RegistryClient` per registry.

Only what pull and push need, each call named after the endpoint it uses:

=====================  ===========================================================
``get_manifest``       GET  /v2/<name>/manifests/<reference>   (Accept: OCI + Docker)
``head_blob``          HEAD /v2/<name>/blobs/<digest>
``fetch_blob``         GET  /v2/<name>/blobs/<digest>          (streamed into the CAS)
``mount_blob``         POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>
``upload_blob``        POST /v2/<name>/blobs/uploads/ then PUT (monolithic) or PATCH*+PUT (chunked)
``put_manifest``       PUT  /v2/<name>/manifests/<reference>
=====================  ===========================================================
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import urllib3.exceptions as ue

from sandbox.image import mediatypes as mt
from sandbox.image.cas import BlobStore, sha256_digest
from sandbox.image.errors import AuthError, DigestMismatch, ManifestUnknown, RegistryError
from sandbox.registry.transport import HTTPResponse, RegistryOptions, Transport

log = logging.getLogger("sandbox.registry")

MAX_MANIFEST = 4 << 20  # the distribution spec lets registries refuse bigger; so do we
DEFAULT_CHUNK = 32 << 20


def pull_scope(path: str) -> str:
    return f"repository:{path}:pull"


def push_scope(path: str) -> str:
    return f"repository:{path}:pull,push"


class RegistryClient:
    """Talks to one registry (``domain`` as in references: ``docker.io``, ``127.0.0.1:5000``)."""

    def __init__(self, domain: str, options: RegistryOptions | None = None, *, repo_path: str | None = None) -> None:
        self.domain = domain
        self.options = options or RegistryOptions()
        self.transport = Transport(domain, self.options, repo_path)
        self._streams: set[HTTPResponse] = set()
        self._streams_lock = threading.Lock()
        self._aborted = False

    def abort_downloads(self) -> None:
        """Make every blob download in progress (in other threads) fail at once, and later ones
        not start: a stalled connection must not hold up an interrupted pull."""
        with self._streams_lock:
            self._aborted = True
            streams = list(self._streams)
        for resp in streams:
            resp.abort()

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------------

    def _fail(self, resp: HTTPResponse, what: str) -> RegistryError:
        detail = resp.error_detail()
        resp.release()
        extra = f": {detail}" if detail else ""
        if resp.status == 404:
            return ManifestUnknown(f"{what}: not found{extra}")
        if resp.status in (401, 403):
            return AuthError(f"{what}: access denied (HTTP {resp.status}){extra}",
                             hint=f"run `sbx login {self.domain}` if the repository needs credentials")
        return RegistryError(f"{what}: registry {self.domain} answered HTTP {resp.status}{extra}")

    def ping(self) -> None:
        """GET /v2/ (authenticating if the registry wants it): checks the address and credentials."""
        resp = self.transport.request("GET", "/v2/", scopes=())
        if resp.status != 200:
            raise self._fail(resp, f"registry {self.domain}")
        resp.release()

    # --- manifests -------------------------------------------------------------------------------

    def get_manifest(self, path: str, reference: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest: ``(bytes, media type, digest)``. A digest reference
        is verified against the content."""
        what = f"manifest {self.domain}/{path}:{reference}" if not reference.startswith("sha256:") else \
            f"manifest {self.domain}/{path}@{reference}"
        resp = self.transport.request("GET", f"/v2/{path}/manifests/{reference}", scopes=(pull_scope(path),),
                                      headers={"Accept": mt.MANIFEST_ACCEPT}, preload=False)
        if resp.status != 200:
            resp.data  # noqa: B018 - read the error body
            if resp.status == 404:
                resp.release()
                raise ManifestUnknown(f"{what.replace('manifest ', '', 1)}: not found in the registry",
                                      hint="check the repository name and tag")
            raise self._fail(resp, what)
        data = b""
        for chunk in resp.stream(65536):
            data += chunk
            if len(data) > MAX_MANIFEST:
                resp.release()
                raise RegistryError(f"{what} is larger than {MAX_MANIFEST} bytes")
        resp.release()
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"{what}: registry sent content that hashes to {digest}")
        header_digest = resp.headers.get("Docker-Content-Digest")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise DigestMismatch(f"{what}: content hashes to {digest}, the registry says {header_digest}")
        try:
            doc = json.loads(data)
        except ValueError:
            raise RegistryError(f"{what} is not JSON") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"{what} is not a JSON object")
        media_type = mt.manifest_media_type(doc, resp.headers.get("Content-Type"))
        return data, media_type, digest

    def put_manifest(self, path: str, reference: str, data: bytes, media_type: str) -> str:
        """Upload a manifest under a tag or digest; returns the digest (checked against the registry's)."""
        digest = sha256_digest(data)
        resp = self.transport.request("PUT", f"/v2/{path}/manifests/{reference}", scopes=(push_scope(path),),
                                      headers={"Content-Type": media_type}, body=data,
                                      rewind=lambda: data)
        if resp.status not in (200, 201, 202):
            raise self._fail(resp, f"push manifest {self.domain}/{path}:{reference}")
        remote = resp.headers.get("Docker-Content-Digest")
        resp.release()
        if remote and remote != digest:
            raise DigestMismatch(f"registry {self.domain} stored manifest {path}:{reference} as {remote}, "
                                 f"expected {digest}")
        return digest

    # --- blobs -----------------------------------------------------------------------------------

    def head_blob(self, path: str, digest: str, *, push: bool = False) -> int | None:
        """Size of the blob if the repository has it, else None."""
        scope = push_scope(path) if push else pull_scope(path)
        resp = self.transport.request("HEAD", f"/v2/{path}/blobs/{digest}", scopes=(scope,))
        resp.release()
        if resp.status == 200:
            try:
                return int(resp.headers.get("Content-Length", "0"))
            except ValueError:
                return 0
        if resp.status == 404:
            return None
        raise self._fail(resp, f"blob {digest[:19]} in {self.domain}/{path}")

    def fetch_blob(self, path: str, digest: str, blobs: BlobStore, *, size: int | None = None,
                   progress: Callable[[int], None] | None = None) -> str:
        """Stream a blob into ``blobs``, verifying digest (and size if given). Retries a broken download
        from the start up to ``options.retries`` times. Idempotent."""
        what = f"blob {digest[:19]} of {self.domain}/{path}"
        attempt = 0
        while True:
            if self._aborted:
                raise RegistryError(f"{what}: download aborted")
            resp = self.transport.request("GET", f"/v2/{path}/blobs/{digest}", scopes=(pull_scope(path),),
                                          preload=False)
            if resp.status != 200:
                resp.data  # noqa: B018
                raise self._fail(resp, what)
            with self._streams_lock:
                self._streams.add(resp)
                if self._aborted:
                    resp.abort()
            try:
                with blobs.writer(digest, size) as w:
                    try:
                        for chunk in resp.stream(1 << 20):
                            w.write(chunk)
                            if progress:
                                progress(len(chunk))
                    finally:
                        with self._streams_lock:
                            self._streams.discard(resp)
                        resp.release()
                    if size is not None and w.size < size:
                        raise ConnectionError(f"connection closed after {w.size} of {size} bytes")
                    return w.commit()
            except DigestMismatch as e:
                raise DigestMismatch(f"{what}: downloaded content does not match its digest",
                                     hint="the registry sent corrupt data; nothing was stored") from e
            except (ue.HTTPError, OSError) as e:  # the connection broke mid-body (disk errors are StoreError)
                if attempt >= self.options.retries or self._aborted:
                    raise RegistryError(f"{what}: download failed: {e}") from e
                attempt += 1
                log.debug("%s: retrying after %s", what, e)
                if progress:
                    progress(-1)  # start over

    def mount_blob(self, path: str, digest: str, from_path: str) -> bool:
        """Cross-repository mount; True if the registry now has the blob in ``path``."""
        resp = self.transport.request(
            "POST", f"/v2/{path}/blobs/uploads/?mount={digest}&from={from_path}",
            scopes=(push_scope(path), pull_scope(from_path)), body=b"", rewind=lambda: b"",
            headers={"Content-Length": "0"})
        loc = resp.headers.get("Location")
        status = resp.status
        resp.release()
        if status == 201:
            return True
        if status == 202 and loc:
            # The registry opened an upload session instead: cancel it (best effort).
            try:
                self.transport.request("DELETE", self.transport.absolute(loc), scopes=(push_scope(path),)).release()
            except RegistryError:
                pass
        return False

    def upload_blob(self, path: str, digest: str, size: int, opener: Callable[[], BinaryIO], *,
                    chunk_size: int | None = None, progress: Callable[[int], None] | None = None) -> None:
        """Upload a blob: monolithic (POST, PUT with the body) if ``chunk_size`` is None or the blob is not
        bigger, else chunked (POST, PATCH per chunk, PUT to close). ``opener()`` opens the content afresh
        (for retries). Retries the whole upload on transient failures."""
        attempt = 0
        while True:
            try:
                self._upload_once(path, digest, size, opener, chunk_size, progress)
                return
            except RegistryError as e:
                if isinstance(e, AuthError) or attempt >= self.options.retries or not getattr(e, "transient", False):
                    raise
                attempt += 1
                if progress:
                    progress(-1)

    def _start_upload(self, path: str) -> str:
        resp = self.transport.request("POST", f"/v2/{path}/blobs/uploads/", scopes=(push_scope(path),),
                                      body=b"", rewind=lambda: b"", headers={"Content-Length": "0"})
        if resp.status != 202 or not resp.headers.get("Location"):
            raise self._fail(resp, f"start upload to {self.domain}/{path}")
        loc = resp.headers["Location"]
        resp.release()
        return self.transport.absolute(loc)

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return location + ("&" if "?" in location else "?") + "digest=" + digest

    def _upload_once(self, path: str, digest: str, size: int, opener: Callable[[], BinaryIO],
                     chunk_size: int | None, progress: Callable[[int], None] | None) -> None:
        what = f"upload blob {digest[:19]} to {self.domain}/{path}"
        loc = self._start_upload(path)
        scopes = (push_scope(path),)
        if chunk_size is None or size <= chunk_size:
            with opener() as f:
                body = _CountingReader(f, progress)
                resp = self.transport.request(
                    "PUT", self._with_digest(loc, digest), scopes=scopes, body=body,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
            if resp.status != 201:
                err = self._fail(resp, what)
                err.transient = resp.status >= 500  # type: ignore[attr-defined]
                raise err
            resp.release()
            return
        offset = 0
        with opener() as f:
            while offset < size:
                n = min(chunk_size, size - offset)
                data = f.read(n)
                if len(data) != n:
                    raise RegistryError(f"{what}: local blob is shorter than {size} bytes")
                resp = self.transport.request(
                    "PATCH", loc, scopes=scopes, body=data, headers={
                        "Content-Type": "application/octet-stream", "Content-Length": str(n),
                        "Content-Range": f"{offset}-{offset + n - 1}"})
                if resp.status != 202:
                    err = self._fail(resp, what)
                    err.transient = resp.status >= 500  # type: ignore[attr-defined]
                    raise err
                loc = self.transport.absolute(resp.headers.get("Location") or loc)
                resp.release()
                offset += n
                if progress:
                    progress(n)
        resp = self.transport.request("PUT", self._with_digest(loc, digest), scopes=scopes, body=b"",
                                      headers={"Content-Length": "0"})
        if resp.status != 201:
            raise self._fail(resp, what)
        resp.release()


class _CountingReader:
    """A file wrapper reporting bytes sent; urllib3 sends file bodies with read()."""

    def __init__(self, f: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self._f = f
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n and n > 0 else 1 << 20)
        if data and self._progress:
            self._progress(len(data))
        return data


def blob_opener(blobs: BlobStore, digest: str) -> Callable[[], Any]:
    path = blobs.path(digest)
    return lambda: open(path, "rb")  # noqa: SIM115 - the caller closes it


__all__ = ["RegistryClient", "RegistryOptions", "blob_opener"]
