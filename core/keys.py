"""Every Redis key of the service, built here and nowhere else (as rq's own ``rq/keys.py``).

RQ's keys (jobs, queues, registries) are RQ's: code reaches them through RQ's APIs (``Job``,
``Queue``, the registries), never by formatting ``rq:...`` strings.

    mtl:file-owners                    hash "<kind>/<name or stem>" -> "<owner> <unix time>": who made a file
    mtl:avatar-owners                  hash avatar id -> owner
    mtl:avatar-job:<avatar id>         the avatar's latest preparation job
    mtl:avatar-reenroll:<avatar>:<v>   claim on re-enrolling an avatar for bank format <v> (lipsync/upkeep.py)
    mtl:alive:<worker>                 a batch worker's heartbeat (short TTL)
    mtl:cycle:<avatar>:<owner>:<room>  where the avatar's idle cycle stands for a room (or a client's label)
    mtl:ratelimit...                   rate-limit windows (api/ratelimit.py builds below RATELIMIT_PREFIX)
    mtl:room... / mtl:rooms            live rooms (see core/rooms.py for each suffix)
    mtl:room-name:<zbjname>, mtl:room-stream:<stream key>  a room's id by its legacy name, by its stream key
    mtl:stream-worker:<process>        a stream worker's heartbeat and load
    mtl:flv:<process>, mtl:flv-processes  HTTP-FLV viewer counts per API process
    mtl:interview..., mtl:stock-clip...  interviews and stock clips
"""

from __future__ import annotations

FILE_OWNERS = "mtl:file-owners"
AVATAR_OWNERS = "mtl:avatar-owners"
ROOMS = "mtl:rooms"
STOCK_SET = "mtl:stock-clips"
FLV_PROCESSES = "mtl:flv-processes"
RATELIMIT_PREFIX = "mtl:ratelimit"


def avatar_job(avatar_id: str) -> str:
    return f"mtl:avatar-job:{avatar_id}"


def avatar_reenroll(avatar_id: str, version: str) -> str:
    return f"mtl:avatar-reenroll:{avatar_id}:{version}"


def worker_alive(worker: str) -> str:
    return f"mtl:alive:{worker}"


def cycle(avatar_id: str, owner: str | None, room: str | None) -> str:
    # The owner keeps one tenant's labels ("room-a") from moving another tenant's cycle.
    return f"mtl:cycle:{avatar_id}:{owner or '-'}:{room or '-'}"


# ---- rooms ----
def room(room_id: str, suffix: str = "") -> str:
    return f"mtl:room:{room_id}" + (f":{suffix}" if suffix else "")


def room_name(zbjname: str) -> str:
    return f"mtl:room-name:{zbjname}"


def room_stream(stream_key: str) -> str:
    return f"mtl:room-stream:{stream_key}"


def stream_worker(process: str) -> str:
    return f"mtl:stream-worker:{process}"


def flv_counts(process: str) -> str:
    return f"mtl:flv:{process}"


# ---- interviews ----
def interview(interview_id: str) -> str:
    return f"mtl:interview:{interview_id}"


def interview_of_room(room_id: str) -> str:
    return f"mtl:interview-room:{room_id}"


def stock_clip(avatar_id: str, language: str, stock_id: int, text_hash: str) -> str:
    return f"mtl:stock-clip:{avatar_id}:{language}:{stock_id}:{text_hash}"
