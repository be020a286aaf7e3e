"""One status enum per kind, and the wire keeps its strings: every enum's values are exactly what the
API's schemas promise, and a record holding an enum member serialises to the plain string."""

from __future__ import annotations

import json
from typing import get_args

from rq.job import JobStatus


def _literal(model, field: str) -> set[str]:
    return set(get_args(model.model_fields[field].annotation))


def test_each_enum_is_what_its_schema_promises():
    from api.schemas.avatars import EnrollmentState as EnrollmentOut
    from api.schemas.interviews import InterviewOut, QuestionOut, StockClipOut
    from api.schemas.jobs import JobOut
    from api.schemas.rooms import RoomOut
    from core.interviews.store import ClipStatus
    from core.jobs import SHOWN_STATUSES
    from core.rooms import RoomState
    from lipsync.upkeep import EnrollmentState

    assert {s.value for s in JobOut.model_fields["status"].annotation} == {s.value for s in SHOWN_STATUSES}
    assert set(SHOWN_STATUSES) <= set(JobStatus)  # RQ's own
    assert _literal(QuestionOut, "status") == _literal(StockClipOut, "status") == {s.value for s in ClipStatus}
    assert _literal(InterviewOut, "status") == {s.value for s in ClipStatus} - {"missing"}
    assert _literal(RoomOut, "state") == {s.value for s in RoomState}
    assert _literal(EnrollmentOut, "state") == {s.value for s in EnrollmentState}


def test_statuses_serialise_as_their_strings():
    from core.conversations.store import MessageStatus
    from core.rooms import AudienceState, UtteranceStatus

    record = {"job": JobStatus.FAILED, "message": MessageStatus.ANSWERED, "said": UtteranceStatus.CUT,
              "audience": AudienceState.LIVE}
    assert json.loads(json.dumps(record)) == {"job": "failed", "message": "answered", "said": "cut", "audience": "live"}
    assert MessageStatus(json.loads(json.dumps(MessageStatus.SPOKEN))) is MessageStatus.SPOKEN


def test_a_reply_reads_as_its_sentences_were_said():
    """The reply status rules in one place (core/conversations/store.py), from stored strings."""
    from core.conversations.store import MessageStatus, _with_said

    reply = {"id": "m", "role": "assistant", "turn": 3, "status": "complete",
             "sentences": [{"text": "Hello."}, {"text": "Goodbye."}]}
    said = {"m:0": {"status": "spoken"}, "m:1": {"status": "spoken"}}
    assert _with_said(reply, said, 3)["status"] == MessageStatus.SPOKEN
    out = _with_said(reply, {"m:0": {"status": "spoken"}, "m:1": {"status": "speaking"}}, 3)
    assert out["status"] == MessageStatus.SPEAKING and out["text"] == "Hello."
    out = _with_said(reply, {"m:0": {"status": "spoken"}}, 4)  # superseded: the second never plays
    assert out["status"] == MessageStatus.INTERRUPTED
    assert [s["status"] for s in out["sentences"]] == ["spoken", "dropped"]
    failed = {**reply, "status": "failed", "sentences": []}
    assert _with_said(failed, {}, 3)["status"] == MessageStatus.FAILED
