"""Helpers for benches/test_build.py: the base image and build context (made offline, no sbx code),
rootless buildah with a throw-away storage, and the summary of build times.

The busybox base comes from tests/image/sbx_image_testlib.py (through images_support), so the benchmarks
and the image tests build their images the same way.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from images_support import RatioReport, image_testlib


# --- the base image and the context -----------------------------------------------------------------

def base_layout(path: Path, name: str) -> Path:
    """An OCI layout holding a busybox image with every applet linked in /bin (ref.name ``name``)."""
    lib = image_testlib()
    ents = [e for e in lib.busybox_entries() if e.type != "symlink"]
    out = subprocess.run([lib.need("busybox"), "--list"], capture_output=True, text=True, check=True).stdout
    ents += [lib.Entry(f"bin/{a}", "symlink", link="busybox") for a in sorted(set(out.split()) - {"busybox"})]
    ents += [lib.Entry("etc/group", "file", b"root:x:0:\n"), lib.Entry("usr", "dir"), lib.Entry("usr/bin", "dir")]
    img = lib.build_image([lib.make_tar(ents)], cmd=["/bin/sh"], env=["PATH=/usr/bin:/bin"])
    return lib.write_layout(path, [(img, name)])


def dockerfile(base: str, generated: int, owners: bool) -> str:
    """Several RUN and COPY steps of a typical application image, and metadata steps.  ``owners``: chown
    to a user (sbx keeps owners other than root only with a subordinate id range)."""
    owners_cmd = " && chown -R 1000:1000 /home/app /opt/app/build" if owners else ""
    return f"""\
FROM {base}
ENV APP=/opt/app LANG=C.UTF-8
WORKDIR /opt/app
COPY src/ ./src/
RUN mkdir -p build && cat src/*/*.txt > build/all.txt && wc -l build/all.txt > build/count
COPY assets/ ./assets/
RUN i=0; while [ $i -lt {generated} ]; do echo "generated $i" > build/gen-$i.txt; i=$((i+1)); done \\
    && sha256sum assets/* > assets/SHA256SUMS
RUN cp -r src src-copy && rm -r src-copy/d00 && chmod -R go-w src-copy && ln -s src-copy current
COPY conf/app.conf /etc/app.conf
RUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && echo app:x:1000: >> /etc/group \
    && mkdir -p /home/app{owners_cmd}
LABEL org.example.bench=sbx-build
USER app
CMD ["cat", "/opt/app/build/count"]
"""


#: The busybox multi-stage set's Dockerfile, beside the single-stage one in the context.
MULTISTAGE = "Dockerfile.multi"


def multistage_dockerfile(base: str, generated: int, owners: bool) -> str:
    """A multi-stage build: a stage generating files, a stage archiving the source tree, and a final
    stage copying from both (COPY --from) and from the context, then adding a user."""
    owners_cmd = " && chown -R 1000:1000 /home/app /opt/gen" if owners else ""
    return f"""\
FROM {base} AS gen
WORKDIR /out
RUN i=0; while [ $i -lt {generated} ]; do echo "generated $i" > gen-$i.txt; i=$((i+1)); done && sha256sum gen-* > SUMS
FROM {base} AS pack
COPY src/ /src/
RUN tar -C /src -cf /src.tar . && sha256sum /src.tar > /src.sum
FROM {base}
COPY --from=gen /out/ /opt/gen/
COPY --from=pack /src.tar /src.sum /opt/
COPY conf/app.conf /etc/app.conf
RUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && echo app:x:1000: >> /etc/group \\
    && mkdir -p /home/app{owners_cmd}
USER app
CMD ["cat", "/opt/src.sum"]
"""


def fs_steps(text: str) -> int:
    """Steps that make a layer (COPY, ADD, RUN): what a fully cached rebuild reports as CACHED."""
    return sum(1 for line in text.splitlines() if line.split(" ", 1)[0] in ("COPY", "ADD", "RUN"))


def make_context(d: Path, base: str, full: bool, owners: bool) -> dict[str, Any]:
    """Source files (text), a binary-like asset (half random, half text) and a config file.
    Full: 400 files of 1-8 kB in 10 directories, a 2 MB asset, 400 generated files; CI: a tenth."""
    rng = random.Random(11)
    files, dirs, asset, generated = (400, 10, 2 << 20, 400) if full else (40, 4, 128 << 10, 40)
    words = b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    total = 0
    for i in range(files):
        sub = d / "src" / f"d{i % dirs:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        n = rng.randint(1024, 8192)
        text = bytearray()
        while len(text) < n:
            text += b" ".join(rng.choice(words) for _ in range(10)) + b"\n"
        (sub / f"f{i:04d}.txt").write_bytes(bytes(text[:n]))
        total += n
    (d / "assets").mkdir()
    (d / "assets" / "blob.bin").write_bytes(os.urandom(asset // 2) + b"text line\n" * (asset // 20))
    (d / "conf").mkdir()
    (d / "conf" / "app.conf").write_text("[app]\nworkers = 2\n")
    text = dockerfile(base, generated, owners)
    (d / "Dockerfile").write_text(text)
    (d / MULTISTAGE).write_text(multistage_dockerfile(base, generated, owners))
    return {"files": files, "bytes": total + asset, "generated": generated, "steps": fs_steps(text)}


# --- buildah ------------------------------------------------------------------------------------------

class Buildah:
    """Rootless buildah (chroot isolation) with its own --root/--runroot under a work dir; HOME and XDG dirs
    of its own (no user storage.conf or registries.conf), so nothing of the user's is touched."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.exe = shutil.which("buildah") or "/usr/bin/buildah"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env, XDG_RUNTIME_DIR="", BUILDAH_ISOLATION="chroot")
        for v in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "BUILDAH_LAYERS",
                  "STORAGE_DRIVER", "REGISTRY_AUTH_FILE"):
            self.env.pop(v, None)
        self.driver: list[str] = []

    def args(self, *more: str) -> list[str]:
        return [self.exe, "--root", str(self.workdir / "root"), "--runroot", str(self.workdir / "run"),
                *self.driver, *more]

    def choose_driver(self, archive: Path) -> str:
        """Native overlay (rootless on kernel >= 5.13) when it works, else vfs; pulls ``archive`` (a
        docker-archive) into the store. Returns a description for the printout (or an error)."""
        last = ""
        for driver in ("overlay", "vfs"):
            self.driver = ["--storage-driver", driver]
            p = subprocess.run(self.args("pull", "--quiet", f"docker-archive:{archive}"), env=self.env,
                               capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                v = subprocess.run([self.exe, "--version"], capture_output=True, text=True).stdout.strip()
                return f"{driver} storage, {v}"
            last = (p.stderr.strip().splitlines() or ["?"])[-1]
            self.remove()
        raise RuntimeError(f"buildah cannot pull the base image: {last}")

    def prune(self) -> None:
        """Drop the images of earlier rounds (untimed): dangling images and their layers."""
        subprocess.run(self.args("rmi", "--prune"), env=self.env, capture_output=True, timeout=120)

    def remove(self) -> None:
        """Remove the store: files of subordinate ids need buildah's user namespace."""
        if os.geteuid() != 0:
            subprocess.run(self.args("unshare", "rm", "-rf", str(self.workdir / "root"), str(self.workdir / "run")),
                           env=self.env, capture_output=True, timeout=120)
        shutil.rmtree(self.workdir / "root", ignore_errors=True)
        shutil.rmtree(self.workdir / "run", ignore_errors=True)


# --- the summary --------------------------------------------------------------------------------------

class BuildReport(RatioReport):
    """RatioReport's printout (medians, sbx/peer ratios against their targets, what was not measured), with
    ratios to 3 decimals (a ratio near its target must not print as the target), plus absolute targets."""

    TITLE = "sbx build / buildah bud (medians, this run)"

    def __init__(self, pairs: list[tuple[str, str, float | None]], limits: dict[str, float]) -> None:
        super().__init__(pairs)
        self.limits = limits
        self.names = sorted(set(self.names) | set(limits))

    def lines(self, config: Any) -> list[str]:
        med = self.medians(config)
        out = [f"{name:<28} {med[name] * 1000:10.1f} ms" for name in self.names if name in med]
        for a, b, target in self.pairs:
            if a in med and b in med and med[b] > 0:
                r = med[a] / med[b]
                t = f"   target <= {target}x {'ok' if r <= target else 'MISSED'}" if target else ""
                out.append(f"{a} / {b}: {r:.3f}x{t}")
        for name, limit in self.limits.items():
            if name in med:
                out.append(f"{name}: {med[name] * 1000:.0f} ms   target < {limit * 1000:.0f} ms "
                           f"{'ok' if med[name] < limit else 'MISSED'}")
        out.extend(f"not measured: {name}: {why}" for name, why in sorted(self.notes.items()))
        out.extend(self.info if med else ())
        return out
