"""Runtime: from options to an OCI-shaped spec (spec.py), to a launch plan (plan.py), to a
process (launch.py, through the one native launcher in sandbox._native)."""
