"""Every Redis key of the interview feature, built in one place.

    mtl:interview:<id>                          JSON record of one interview (written once at creation)
    mtl:interview-room:<room_id>                the interview id of a room (what /humanv2 looks up)
    mtl:stock-clip:<avatar>:<lang>:<sid>:<hash> JSON entry of a stock clip render (claimed with SET NX)
    mtl:stock-clips                             set of the stock-clip entry keys (for listing)
"""

from __future__ import annotations

STOCK_SET = "mtl:stock-clips"


def interview(interview_id: str) -> str:
    return f"mtl:interview:{interview_id}"


def interview_of_room(room_id: str) -> str:
    return f"mtl:interview-room:{room_id}"


def stock_clip(avatar_id: str, language: str, stock_id: int, text_hash: str) -> str:
    return f"mtl:stock-clip:{avatar_id}:{language}:{stock_id}:{text_hash}"
