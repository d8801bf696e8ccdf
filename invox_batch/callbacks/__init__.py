"""Provider callbacks: the durable store, the receiver, and the flow's completion modes."""

from ._receiver import (
    CALLBACK_PATH,
    ReceiverConfig,
    accept_callback,
    running_receiver,
    serve_callbacks,
)
from ._store import CallbackStore

__all__ = [
    "CALLBACK_PATH",
    "CallbackStore",
    "ReceiverConfig",
    "accept_callback",
    "running_receiver",
    "serve_callbacks",
]
