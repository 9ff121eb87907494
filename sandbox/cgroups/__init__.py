"""Control groups for sandboxes: limits, freezing, killing and stats in a delegated cgroup v2
subtree (`v2.py`).  Rank 2 in docs/engine.md, beside `sandbox.runtime` (it imports runtime's
hook protocol and options; runtime never imports it)."""
