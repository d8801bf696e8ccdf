"""Provider callbacks in one room: the durable store, the receiver, and the flow's completion modes."""

from ._completion import CallbackCompletion, Completion, PollCompletion, completion_for
from ._options import CompletionMode, callback_options, check_completion, parse_listen
from ._receiver import ReceiverConfig, accept_callback, running_receiver, serve_callbacks
from ._store import CallbackStore

__all__ = [
    "CallbackCompletion",
    "CallbackStore",
    "Completion",
    "CompletionMode",
    "PollCompletion",
    "ReceiverConfig",
    "accept_callback",
    "callback_options",
    "check_completion",
    "completion_for",
    "parse_listen",
    "running_receiver",
    "serve_callbacks",
]
