"""Typed records: what the ledger keeps round-trips, and outcomes read them (pure functions)."""

from __future__ import annotations

import json

from invox import PollTimeoutError
from invox_batch.errors import ErrorType
from invox_batch.records import Outcome, ResultRecord, Segment, UploadRecord

UPLOAD = UploadRecord("r1", "2026-01-01T10:00:00+00:00", "run-1")
RESULT = ResultRecord(
    "r1",
    "COMPLETED",
    (Segment(0.0, 1.5, " chest pain ", "0"), Segment(1.5, 2.0, " ")),
    completed_at="2026-01-01T10:00:05+00:00",
)


def test_records_round_trip_through_json_as_the_ledger_stores_them() -> None:
    assert UploadRecord.from_json(json.loads(json.dumps(UPLOAD.to_json()))) == UPLOAD
    stored = json.loads(json.dumps(RESULT.to_json()))
    assert stored["segments"][0] == [0.0, 1.5, " chest pain ", "0"]  # the positional list form
    assert ResultRecord.from_json(stored) == RESULT


def test_older_records_with_three_item_segments_still_read() -> None:
    old = {"request_id": "r", "status": "COMPLETED", "segments": [[0, 1, "hello"]]}
    assert ResultRecord.from_json(old).segments == (Segment(0.0, 1.0, "hello", None),)


def test_an_outcome_from_records_joins_the_text_and_keeps_the_times() -> None:
    outcome = Outcome.from_records(UPLOAD, RESULT, attempts=1, from_cache=True)
    assert outcome.status == "completed" and outcome.text == "chest pain"
    assert outcome.submitted_at is not None and outcome.completed_at is not None
    assert (outcome.completed_at - outcome.submitted_at).total_seconds() == 5.0


def test_a_provider_error_says_a_rerun_resubmits_it() -> None:
    failed = ResultRecord("r1", "ERROR", error_message="bad audio")
    outcome = Outcome.from_records(UPLOAD, failed, attempts=2, from_cache=False)
    assert outcome.error_type is ErrorType.PROVIDER_ERROR and outcome.text is None
    assert outcome.error_message == "bad audio (rerun to resubmit it)"


def test_an_error_keeps_the_request_id_so_a_rerun_resumes() -> None:
    error = PollTimeoutError("still pending", request_id="r1", last_status="PENDING")
    outcome = Outcome.from_error(error, upload=UPLOAD, attempts=1)
    assert outcome.error_type is ErrorType.TIMEOUT and outcome.request_id == "r1"
