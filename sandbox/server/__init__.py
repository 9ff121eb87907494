"""The Docker Engine API on a unix socket (`sbx system service`), so that docker-py,
testcontainers-python and docker-compose drive sbx unchanged.

`http.py` is the HTTP/1.1 server (stdlib `socketserver` threads, one per connection; chunked
streaming; hijacked attach/exec); `system.py`, `containers.py`, `images.py`, `volumes.py` and
`networks.py` are the endpoints, each a thin mapping onto the engine (`sandbox.containers`,
`sandbox.image`, `sandbox.registry`, `sandbox.build`); `mapper.py` turns a create body
(Config/HostConfig/NetworkingConfig) into `RunOptions`.  Every request runs under
`config.use(ctx)` of the service: no process-global state is read or written per request."""
