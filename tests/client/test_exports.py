"""The client's public surface: exactly these names, all importable, all named ``invox.X``."""

from __future__ import annotations

import inspect
import pickle

import pytest

import invox

EXPECTED = {
    # the client, its settings and what users configure it with
    "InvoxClient",
    "InvoxSettings",
    "PollPolicy",
    "PollTimer",
    "unlimited",
    "ACCEPTED_MIME_TYPES",
    "DEFAULT_MIME_TYPES",
    "check_callback_url",
    # what users receive
    "Transcription",
    "Segment",
    "PresignedUpload",
    "Status",
    "TERMINAL_STATUSES",
    # what callback receivers need
    "verify_callback_signature",
    "check_created_at",
    "CallbackSignatureError",
    # the exception tree
    "InvoxError",
    "TransientError",
    "TerminalError",
    "ConfigurationError",
    "TransportError",
    "ResponseLostError",
    "APIUnreachableError",
    "ResponseFormatError",
    "PollTimeoutError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RequestTimeoutError",
    "PayloadTooLargeError",
    "UnprocessableEntityError",
    "RateLimitError",
    "ServerError",
    "UploadURLRejectedError",
}


def test_all_is_exactly_the_public_surface_and_nothing_else_leaks() -> None:
    assert sorted(invox.__all__) == sorted(EXPECTED)
    assert len(invox.__all__) == len(set(invox.__all__))
    public = {name for name in vars(invox) if not name.startswith("_")}
    assert public == EXPECTED  # no helper reachable as invox.X without being exported


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_exported_name_imports_and_classes_and_functions_name_invox(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from invox import {name}", namespace)
    value = namespace[name]
    if inspect.isclass(value) or inspect.isfunction(value):
        assert value.__module__ == "invox"
        assert getattr(invox, value.__qualname__) is value


def test_rewritten_names_still_pickle_and_show_the_public_path() -> None:
    error = invox.RateLimitError("slow down", status_code=429)
    assert type(pickle.loads(pickle.dumps(error))) is invox.RateLimitError
    assert pickle.loads(pickle.dumps(invox.PollPolicy(timeout_s=5))) == invox.PollPolicy(5)
    assert repr(invox.InvoxError).startswith("<class 'invox.InvoxError'")
