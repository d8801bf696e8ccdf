"""The ``invox-batch`` command: the top floor, and the only place that starts the embedded sandbox.

Commands: ``run`` (the flow over a manifest), ``sandbox``
(the offline double), ``callbacks`` (the receiver), ``validate`` and ``report``.
"""

from . import _run, _sandbox, _tools  # noqa: F401  (each module registers its commands)
from ._app import app, main

__all__ = ["app", "main"]
