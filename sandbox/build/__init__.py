"""``sbx build``: Dockerfile builds.  :mod:`sandbox.build.dockerfile` is the pure-Python front end (parse a
Dockerfile into stages and instructions, expand ``$VAR`` words the way BuildKit does)."""
