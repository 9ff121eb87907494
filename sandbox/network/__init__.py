"""A container's connection to the outside (issue 11): `--network` modes (modes.py), the launch
hooks that start slirp4netns or pasta for a held sandbox and publish its ports (hooks.py,
slirp.py, pasta.py, ports.py).  User-defined networks live in bridge.py and its neighbours.
Nothing here is imported on the path of a `--network none` sandbox."""
