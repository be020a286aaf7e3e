"""Conversation worker: one turn of a room's conversation per job (core/conversations/turn.py)."""

from __future__ import annotations

from rq import get_current_job

from core.conversations.turn import TurnRunner
from core.jobs import set_progress
from core.settings import Settings, get_settings


def reply_to_message(room_id: str, message_id: str, turn: int) -> dict:
    """Job function of the `converse` queue: answer one message in its room, sentence by sentence."""
    job = get_current_job()
    set_progress(job, 0.1)
    return TurnRunner(job.connection, get_settings(), room_id, message_id, int(turn)).run()


def warm_up(settings: Settings) -> None:
    """The question bank, the pooled LLM client and the faq matcher (pinyin tables, the sample sheet's
    index) load before the first turn, not during it: a cold faq index would cost the first reply ~0.4 s."""
    from core.conversations.faq import index_for, sample_material
    from core.conversations.responders import llm_client
    from core.interviews.bank import families

    families()
    llm_client()
    for language in ("zh", "en"):
        index_for(sample_material(), language).match("价格" if language == "zh" else "price")
