"""Code that runs inside the Label Studio server's own environment, not ardrag's (see
:mod:`annotation.server`): this folder goes on that process's ``PYTHONPATH`` and imports nothing of
ardrag."""
