"""The ``invox-batch`` command: the top floor, and the only place that starts the embedded sandbox.

Commands: ``run`` (the flow over a manifest), ``sandbox`` (the offline double), ``callbacks``
(the receiver), ``validate``, ``report``, ``forget`` (erasure) and ``migrate`` (a dataset of an
older version into the current tables).
"""

from . import _data, _run, _sandbox, _tools  # noqa: F401  (each module registers its commands)
from ._app import app, main

__all__ = ["app", "main"]
