"""The container engine: one record per container (state.py), the store of records (store.py),
the lifecycle verbs (lifecycle.py), the detached supervisor (monitor.py), logs and attach.
docs/engine.md is the contract.  Importing the package imports nothing."""
