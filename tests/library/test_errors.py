"""The batch side's error vocabulary: one enum for the error_type column, one exception root."""

from __future__ import annotations

import inspect

import invox
from invox_batch import errors
from invox_batch.errors import FATAL_ERROR_TYPES, ErrorType, InvoxBatchError


def _client_errors() -> list[type[invox.InvoxError]]:
    return [
        obj
        for obj in vars(invox).values()
        if inspect.isclass(obj) and issubclass(obj, invox.InvoxError)
    ]


def test_every_client_error_type_is_a_documented_value() -> None:
    found = {cls.error_type for cls in _client_errors()}
    assert len(found) > 10
    assert found <= {e.value for e in ErrorType}


def test_fatal_error_types_are_members_and_stop_the_whole_run() -> None:
    assert set(ErrorType) >= FATAL_ERROR_TYPES
    assert invox.AuthenticationError.error_type in FATAL_ERROR_TYPES
    assert invox.RateLimitError.error_type not in FATAL_ERROR_TYPES


def test_every_batch_exception_descends_from_the_root_and_is_drawn_in_the_tree() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj is not InvoxBatchError
    ]
    assert classes and all(issubclass(cls, InvoxBatchError) for cls in classes)
    tree = errors.__doc__ or ""
    assert all(cls.__name__ in tree for cls in [InvoxBatchError, *classes])


def test_error_types_compare_and_serialise_as_their_plain_values() -> None:
    import json

    assert ErrorType.BUDGET_EXCEEDED == "budget_exceeded"
    assert json.dumps({"error_type": ErrorType.NOT_AUDIO}) == '{"error_type": "not_audio"}'
