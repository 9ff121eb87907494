"""Shared fixtures for sbx's black-box tests.

Every test starts real sandboxes, through the CLI (``python -m sandbox`` / the ``sbx`` script) or the
Python API, and checks what a process inside sees. Run the whole suite as the unprivileged test users
with ``sudo scripts/test.sh``; running ``pytest tests`` as yourself works too (tests that need a
subuid range, no range, or root skip themselves).

Markers:
  root      only when running as root (euid 0)
  subuid    only when the user has /etc/subuid and /etc/subgid ranges of >= 65536 ids and
            newuidmap/newgidmap exist (sbx's default id mapping then uses the range)
  nosubuid  only when the user has no usable range (sbx's default id mapping is then a single id)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import sbxtest  # noqa: E402
from sbxtest import user_name, build_busybox_rootfs, compile_probe, has_subid_range, subid_range  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "root: runs only as root (euid 0)")
    config.addinivalue_line(
        "markers", "subuid: needs a /etc/subuid+/etc/subgid range of >= 65536 ids and newuidmap/newgidmap")
    config.addinivalue_line("markers", "nosubuid: needs a user without a subordinate id range")
    config.addinivalue_line("markers", "cgroup2vm: runs inside the cgroup v2 VM (tests/vm/harness.py)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds; CI runs it, `-m 'not slow'` skips it "
                                       "for a quick local run")


def pytest_runtest_setup(item):
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root")
    if item.get_closest_marker("subuid") and not has_subid_range():
        pytest.skip("needs a subordinate uid/gid range for this user and newuidmap/newgidmap")
    if item.get_closest_marker("nosubuid") and has_subid_range():
        pytest.skip("needs a user without a subordinate uid/gid range")


#: A skip whose reason says a tool is missing ("... is not installed", "... not found on PATH").
MISSING_TOOL = ("not installed", "not found on path")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI set, as .ci/run does) a test skipped because a tool is missing fails: the machine
    is fresh and scripts/test.sh installs every tool, so a missing one is a defect of the script,
    not a reason to test less.  Skips for privilege (root, subuid range) stay skips."""
    outcome = yield
    rep = outcome.get_result()
    if not (os.environ.get("CI") and rep.skipped and isinstance(rep.longrepr, tuple)):
        return
    reason = str(rep.longrepr[2])
    if any(m in reason.lower() for m in MISSING_TOOL):
        rep.outcome = "failed"
        rep.longrepr = f"{reason}: in CI every tool the tests use is installed by scripts/test.sh (add it there)"


def pytest_report_header(config):
    return (f"sbx tests as {user_name()} (uid {os.getuid()}, gid {os.getgid()}), "
            f"subuid range: {subid_range('/etc/subuid')}, subgid range: {subid_range('/etc/subgid')}, "
            f"XDG_RUNTIME_DIR={os.environ.get('XDG_RUNTIME_DIR')!r}")


@pytest.fixture(scope="session", autouse=True)
def neutral_cwd(tmp_path_factory) -> Path:
    """The working directory of sbx subprocesses: `python -m` puts the cwd on sys.path, and a cwd
    holding the source tree would import the uninstalled package instead of the installed one."""
    sbxtest.NEUTRAL_CWD = tmp_path_factory.mktemp("cwd")
    return sbxtest.NEUTRAL_CWD


@pytest.fixture(scope="session", autouse=True)
def session_store(tmp_path_factory):
    """The session's own storage directory (kept containers, images), so the test user's real
    ~/.local/share/sbx is left alone.  Removed at the end from inside a user namespace: with a
    subuid range it holds files of subordinate ids."""
    d = tmp_path_factory.mktemp("store")
    old = os.environ.get("SBX_ROOT")
    os.environ["SBX_ROOT"] = str(d)
    yield d
    if old is None:
        os.environ.pop("SBX_ROOT", None)
    else:
        os.environ["SBX_ROOT"] = old
    import sandbox
    sandbox.run(["rm", "-rf", str(d)], rootfs="/", network="host", namespaces=("user",))


@pytest.fixture(scope="session")
def cgroup_vm(request, tmp_path_factory):
    """One boot of the cgroup v2 VM (tests/helpers/cgvm.py) for the whole session: every
    collected `cgroup2vm` test, of whichever file, runs in it; the host-side tests read its
    verdicts with `cgvm.inside(request, "cgroup_vm")`."""
    import cgvm
    files = sorted({str(item.path) for item in request.session.items if item.get_closest_marker("cgroup2vm")})
    return cgvm.boot(tmp_path_factory, files)


@pytest.fixture()
def own_container_store(tmp_path, monkeypatch):
    """A container store of the test's own (SBX_ROOT); whatever a failed test left running in it is
    removed afterwards."""
    import sbxtest
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "data"))
    yield
    sbxtest.remove_all_containers()


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> Path:
    """A busybox root filesystem plus /bin/probe (tests/helpers/probe.c built with gcc -static).

    Shared by the session: tests must not modify it on the host (sbx never does, see test_rootfs)."""
    root = build_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    compile_probe(root / "bin/probe")
    return root


@pytest.fixture()
def fresh_rootfs(tmp_path) -> Path:
    """A busybox root filesystem of this test's own."""
    return build_busybox_rootfs(tmp_path / "rootfs")


