"""OCI distribution client: ``client`` (v2 API), ``auth`` (credentials, token flow), ``transport`` (HTTP,
TLS, retries), ``pull`` and ``push`` (store <-> registry). Nothing is imported eagerly."""
