"""What the two-phase launch costs: start-to-exit of /bin/true through launch.create + one no-op
hook + release, against the fast path launch.start (one call, vfork-like clone) of the same spec,
in the same process.  The same namespaces and single-id mapping as test_startup.py's test_api_true;
the `_auto` pair uses the user's default mapping (a subuid range through newuidmap when there is
one, where both paths clone fork-like and the hold adds one round trip).

The ratio (two_phase / fast_path) is printed in the summary (conftest.PAIRS)."""
import os

from sandbox.runtime import launch, spec as spec_mod


class NoopHook:
    name = "noop"

    def attach(self, pid):
        pass

    def teardown(self):
        pass


def _spec(rootfs, **kw):
    return spec_mod.build(["/bin/true"], rootfs=rootfs, container_id=os.urandom(32).hex(), **kw)


def _wait(pid, pidfd):
    _, status = os.waitpid(pid, 0)
    if pidfd >= 0:
        os.close(pidfd)
    assert status == 0


def _fast(spec):
    _wait(*launch.start(spec))


def _two_phase(spec):
    h = launch.create(spec, hooks=(NoopHook(),))
    _wait(*h.release())
    h.teardown()


def test_api_true_fast_path(benchmark, rootfs):
    benchmark(_fast, _spec(rootfs, userns="single"))


def test_api_true_two_phase(benchmark, rootfs):
    benchmark(_two_phase, _spec(rootfs, userns="single"))


def test_api_true_fast_path_auto(benchmark, rootfs):
    benchmark(_fast, _spec(rootfs))


def test_api_true_two_phase_auto(benchmark, rootfs):
    benchmark(_two_phase, _spec(rootfs))


if __name__ == "__main__":
    # python benches/test_two_phase.py ROOTFS [ROUNDS]: the four cases round by round (order
    # alternating), so load that drifts during the run biases none of them; medians and ratios.
    import statistics
    import sys
    import time
    rootfs, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200
    cases = {"fast_path": (_fast, _spec(rootfs, userns="single")),
             "two_phase": (_two_phase, _spec(rootfs, userns="single")),
             "fast_path_auto": (_fast, _spec(rootfs)),
             "two_phase_auto": (_two_phase, _spec(rootfs))}
    t = {k: [] for k in cases}
    for i in range(rounds + 5):
        for k, (fn, sp) in (list(cases.items()) if i % 2 else list(cases.items())[::-1]):
            a = time.perf_counter()
            fn(sp)
            if i >= 5:  # warm-up rounds
                t[k].append(time.perf_counter() - a)
    med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    for k, v in med.items():
        print(f"{k:<16} median {v:7.3f} ms  min {min(t[k]) * 1e3:7.3f} ms")
    print(f"two_phase/fast_path {med['two_phase'] / med['fast_path']:.2f}  "
          f"two_phase_auto/fast_path_auto {med['two_phase_auto'] / med['fast_path_auto']:.2f}")
