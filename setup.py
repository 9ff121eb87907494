"""Build the native launcher (sandbox._native) and the static init binary (sandbox/sbx-init).

Everything else is in pyproject.toml.  Set SBX_DEBUG=1 for an unoptimised build with asserts,
SBX_CFLAGS to override optimisation flags.
"""
import os
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("SBX_DEBUG") == "1"
OPT = os.environ.get("SBX_CFLAGS", "-O0 -g" if DEBUG else "-O2").split()
WARN = [
    "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
    "-Werror=implicit-function-declaration", "-Werror=format=2", "-Werror=return-type",
    "-Werror=incompatible-pointer-types", "-Werror=int-conversion",
]
C_SOURCES = ["csrc/sb_spawn.c", "csrc/sb_child.c", "csrc/sb_wait.c", "csrc/sb_diff.c", "csrc/sb_inroot.c",
             "csrc/sb_seccomp.c"]


class BuildExt(build_ext):
    """Also compile csrc/sb_init.c into a static `sbx-init` next to the extension."""

    def run(self):
        super().run()
        out_dir = os.path.join(os.path.dirname(self.get_ext_fullpath("sandbox._native")))
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, "sbx-init")
        cc = os.environ.get("CC", "cc")
        # No libc (csrc/sb_init.c makes its own syscalls): ~10 KB to copy into a memfd and exec.
        cmd = [cc, "-static", "-nostdlib", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
               "-fno-pie", "-no-pie", "-Os", "-s", *WARN, "-o", target, "csrc/sb_init.c"]
        self.announce(" ".join(cmd), level=2)
        subprocess.run(cmd, check=True)
        os.chmod(target, 0o755)


ext = Extension(
    "sandbox._native",
    sources=["sandbox/_native.pyx", *C_SOURCES],
    include_dirs=["csrc"],
    depends=["csrc/sb_common.h", "csrc/sb_launch.h", "csrc/sb_child.h", "csrc/sb_syscalls.h", "csrc/sb_wait.h", "csrc/sb_diff.h",
             "csrc/sb_inroot.h", "csrc/sb_seccomp.h",
             "sandbox/includes/sb.pxd"],
    # libseccomp (Debian: libseccomp-dev) compiles seccomp profiles to BPF in the parent, as runc,
    # crun and podman do; the child only installs the compiled program.
    libraries=["seccomp"],
    extra_compile_args=[*OPT, *WARN, "-D_GNU_SOURCE"] + (["-DSB_DEBUG=1"] if DEBUG else []),
)

setup(
    ext_modules=cythonize([ext], compiler_directives={"language_level": 3}, quiet=True),
    cmdclass={"build_ext": BuildExt},
)
