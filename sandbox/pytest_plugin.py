"""pytest fixtures for tests that run containers (registered as the `sbx` plugin through the
`pytest11` entry point, so every project that installs sbx gets them):

    def test_server(sbx_container):
        c = sbx_container(command=["sh", "-c", "echo ready; exec sleep 60"])
        wait_for_log(c, "ready")          # from sandbox.containers.ready
        assert c.exec_run(["cat", "/etc/hostname"]).exit_code == 0

`sbx_rootfs` is a busybox root filesystem built once per session from the host's static busybox
(Debian: busybox-static); `sbx_container(...)` takes `sandbox.containers.run`'s arguments, uses
`sbx_rootfs` when given neither an image nor a root, and removes every container it started when
the test ends, whether it passed, failed or left the container running.  A failed test's report
shows the end of each of those containers' logs.

pytest imports this module in every run of every project that has sbx installed, so it imports
nothing of the engine: that happens when a fixture is first used."""
import os

import pytest

_LABEL = "sbx.pytest.test"  # the test that started a container: `sbx ps -a --filter label=...`


def _in_ci():
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _is_static_elf(path):
    """True when the ELF file at `path` has no program interpreter (PT_INTERP): it runs in a
    root filesystem that holds nothing else."""
    import struct
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                return False
            end = "<" if head[5] == 1 else ">"
            if head[4] == 2:  # 64-bit
                phoff, = struct.unpack_from(end + "Q", head, 0x20)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
            else:
                phoff, = struct.unpack_from(end + "I", head, 0x1C)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return not any(struct.unpack_from(end + "I", table, i * phentsize)[0] == 3  # PT_INTERP
                   for i in range(len(table) // phentsize if phentsize else 0))


@pytest.fixture(scope="session")
def sbx_rootfs(tmp_path_factory):
    """A busybox root filesystem (a directory, as a str) shared by the session; sbx never writes
    to a root it runs.  Skips when no static busybox is installed, unless the CI variable is
    set: there a missing tool fails the test rather than hiding it."""
    from sandbox import testing
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if _is_static_elf(p)), None)
    if busybox is None:
        found = testing.find_busybox()
        why = (f"{found} is dynamically linked: it cannot run in a root of its own" if found
               else "no busybox is installed")
        msg = f"sbx_rootfs needs a static busybox ({why}): apt-get install busybox-static"
        if _in_ci():
            pytest.fail(f"{msg} (a missing tool fails under CI)", pytrace=False)
        pytest.skip(msg)
    return testing.make_busybox_rootfs(str(tmp_path_factory.mktemp("sbx") / "rootfs"), busybox=busybox)


@pytest.fixture()
def sbx_container(request):
    """A factory: `sbx_container(image=None, command=None, **run_kwargs)` starts a detached
    container through `sandbox.containers.run` and returns its `Container`.  Every container
    it started is removed (killed first if running) when the test ends, however it ends."""
    from sandbox import containers
    started = []

    def start(image=None, command=None, **kwargs):
        if not kwargs.pop("detach", True):
            raise TypeError("sbx_container starts detached containers; use sandbox.containers.run(detach=False) "
                            "for a command's output")
        if image is None and kwargs.get("rootfs") is None:
            kwargs["rootfs"] = request.getfixturevalue("sbx_rootfs")
        labels = dict(kwargs.pop("labels", None) or {})
        labels.setdefault(_LABEL, request.node.nodeid)
        c = containers.run(image, command, detach=True, labels=labels, **kwargs)
        started.append(c)
        return c

    start.started = started  # read by pytest_runtest_makereport below
    yield start
    errors = []
    for c in reversed(started):
        try:
            c.remove(force=True)
        except containers.NotFound:
            pass  # auto_remove, or the test removed it itself
        except Exception as e:  # keep removing the others; report every failure below
            errors.append(f"{c.name}: {e}")
    if errors:
        pytest.fail("sbx_container could not remove: " + "; ".join(errors), pytrace=False)


_LOG_LINES = 50


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows the end of the log of every container its sbx_container
    started (what a server said before the assertion failed is usually the answer)."""
    outcome = yield
    rep = outcome.get_result()
    factory = (getattr(item, "funcargs", None) or {}).get("sbx_container")
    if rep.when != "call" or not rep.failed or factory is None:
        return
    for c in factory.started:
        try:
            text = c.logs(tail=_LOG_LINES).decode("utf-8", "replace") or "(no output)"
        except Exception as e:  # removed by the test, say
            text = f"(no log: {e})"
        rep.sections.append((f"sbx container {c.name}: the last {_LOG_LINES} lines of its log", text))
