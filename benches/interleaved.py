"""Start-up of sbx and its peers measured interleaved, round by round, so that a machine whose
load drifts during the run (as shared CI machines do) biases no runner more than another.

    python benches/interleaved.py ROOTFS [ROUNDS]      (as an unprivileged user; ROOTFS: a busybox
                                                         root, e.g. from `python -m sandbox.testing`)

Prints the median and minimum of each runner and the ratios the targets are stated in."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox  # noqa: E402
from conftest import CrunDriver  # noqa: E402

R = os.path.abspath(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100
d = tempfile.mkdtemp(prefix="sbx-interleaved-")
os.makedirs(d + "/bundle")
os.symlink(R, d + "/bundle/rootfs")
subprocess.run(["crun", "spec", "--rootless"], cwd=d + "/bundle", check=True)
cfg = json.load(open(d + "/bundle/config.json"))
cfg["process"]["args"] = ["/bin/true"]; cfg["process"]["terminal"] = False; cfg["root"]["readonly"] = True
if not any(n["type"] == "network" for n in cfg["linux"]["namespaces"]): cfg["linux"]["namespaces"].append({"type": "network"})
json.dump(cfg, open(d + "/bundle/config.json", "w")); open(d + "/empty", "w").close()
crun = CrunDriver(d + "/bundle", d + "/empty", d + "/state"); crun.run()
sbx = os.path.join(os.path.dirname(sys.executable), "sbx")
cases = {
 "api": lambda: sandbox.run(["/bin/true"], rootfs=R, userns="single"),
 "api_unconfined": lambda: sandbox.run(["/bin/true"], rootfs=R, userns="single", seccomp="unconfined"),
 "api_range": lambda: sandbox.run(["/bin/true"], rootfs=R),  # default mapping: the kept user namespace with a range
 "bwrap": lambda: subprocess.run(["bwrap", "--unshare-all", "--bind", R, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]),
 "crun": crun.run,
 "cli": lambda: subprocess.run([sbx, "run", "--rm", "--userns", "single", "--rootfs", R, "/bin/true"]),
 "cli_unconfined": lambda: subprocess.run([sbx, "run", "--rm", "--userns", "single", "--security-opt", "seccomp=unconfined", "--rootfs", R, "/bin/true"]),
}
for f in cases.values(): f()
t = {k: [] for k in cases}
for i in range(N):
    for k, f in (list(cases.items()) if i % 2 else list(cases.items())[::-1]):
        a = time.perf_counter(); f(); t[k].append(time.perf_counter() - a)
crun.close()
shutil.rmtree(d, ignore_errors=True)
med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
for k, v in med.items(): print(f"{k:<16} median {v:7.3f} ms  min {min(t[k])*1e3:7.3f} ms")
print(f"api/bwrap {med['api']/med['bwrap']:.2f}  api_unconfined/bwrap {med['api_unconfined']/med['bwrap']:.2f}  "
      f"api_range/bwrap {med['api_range']/med['bwrap']:.2f}  api/crun {med['api']/med['crun']:.2f}  cli/crun {med['cli']/med['crun']:.2f}  cli_unconfined/crun {med['cli_unconfined']/med['crun']:.2f}")
