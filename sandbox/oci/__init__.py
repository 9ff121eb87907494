"""sbx as an OCI runtime (runc's command-line contract), issue 13.

    bundle.py   config.json -> the engine's runtime spec (runtime/spec.py's shape); every field
                is applied or refused with an error naming it
    state.py    per-container state under --root: state.json, the start FIFO, the pid's start time
    hooks.py    the OCI hooks (prestart ... poststop): the state on stdin, timeouts, namespaces
    runtime.py  the verbs: create start state kill delete run exec ps list pause resume update
                features spec

The CLI (`sbx-runc`, `sbx oci ...`) is sandbox/cli/oci.py.  No supervisor stays behind: as with
runc, `create` returns while the container's process waits before execve, re-parented to the
caller's subreaper (containerd's shim, conmon) or to init."""
