"""A contract-faithful local double of the Invox Medical batch transcription API.

``SandboxServer`` runs it on a free loopback port for tests; ``serve`` runs it in the
foreground for users; ``/_sandbox/*`` resets it, injects faults and reports what happened.
"""

from __future__ import annotations

from sandbox.app import create_app
from sandbox.server import SandboxServer, ThreadedServer, serve
from sandbox.settings import Endpoint, Faults, SandboxSettings

__all__ = [
    "Endpoint",
    "Faults",
    "SandboxServer",
    "SandboxSettings",
    "ThreadedServer",
    "create_app",
    "serve",
]
