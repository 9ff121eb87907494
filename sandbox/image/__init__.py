"""Images: references, the content-addressed store, layer unpacking and archives.

Importing this package is cheap (nothing is imported eagerly); use the submodules:
``reference`` (parse/normalise), ``store`` (:class:`~sandbox.image.store.Store`), ``unpack``,
``archive`` (docker-archive / OCI save and load), ``errors``.
"""
