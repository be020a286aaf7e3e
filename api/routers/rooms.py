from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, RedisDep, SettingsDep, require_api_key
from api.schemas.rooms import InterruptOut, RoomCreate, RoomEvent, RoomOut, SayAccepted, SayRequest
from api.services.files import owned_audio
from api.services.rooms import create_room, get_room
from api.services.speech import enqueue_tts
from core.conversations.faq import check_material
from core.conversations.service import clean_text, welcome
from core.conversations.store import MaterialStore
from core.credentials import stat_secret
from core.flvrelay import flv_viewers
from core.metrics import room_label
from core.mediaserver import stat as media_stat
from core.rooms import (SESSION_OFF, SESSION_ON, SPEECH_OFF, SPEECH_ON, Room, RoomState, RoomStore, dark_reason,
                        latest_is)

router = APIRouter(prefix="/v1/rooms", tags=["rooms"], dependencies=[Depends(require_api_key)])


# Publisher events that start or end speech, and that start or end its RTMP session.


def live_view(settings, redis) -> tuple[dict | None, dict]:
    """What the media server publishes (None when its /stat cannot be read, e.g. an external SRS)
    and the HTTP-FLV viewers of every API process: read once per request, for every room."""
    try:
        streams = media_stat(settings.media_http_port, timeout=1.0, secret=stat_secret(settings))
    except Exception:
        streams = None
    return streams, flv_viewers(redis)


def room_out(store: RoomStore, room: Room, live: tuple[dict | None, dict] | None = None) -> RoomOut:
    streams, flv = live if live is not None else live_view(store.settings, store.r)
    publisher = store.publisher(room.id)
    recent = store.events(room.id, last=40)
    pending, held = store.queue_state(room.id)
    # Speaking also between two sentences of one reply: the next one is held or queued already.
    speaking = latest_is(recent, SPEECH_ON, SPEECH_OFF) or held or pending > 0
    relay = flv.get(room.stream_key, {"viewers": 0, "relays": 0})
    if streams is not None:
        stream = streams.get(room.stream_key) or {}
        publishing = bool(stream.get("publishing"))
        by_route = {"rtmp": max(0, int(stream.get("viewers", 0)) - relay["relays"]), "flv": relay["viewers"]}
    else:
        publishing = None
        by_route = {"flv": relay["viewers"]}
    on_air = publishing if publishing is not None else bool(publisher) and latest_is(recent, SESSION_ON, SESSION_OFF)
    return RoomOut(**room.__dict__, open=store.is_open(room.id), publisher=publisher,
                   pending_utterances=pending, urls=room.urls(store.settings),
                   state=RoomState.DARK if not on_air else RoomState.SPEAKING if speaking else RoomState.IDLE,
                   speaking=speaking and on_air,
                   publishing=publishing, viewers=sum(by_route.values()), viewers_by_route=by_route,
                   dark_reason=None if on_air else dark_reason(store, room, bool(publisher), recent),
                   metrics_label=room_label(room.id))


@router.post("", status_code=201, response_model=RoomOut, summary="Open a live room (starts its stream)")
async def create(body: RoomCreate, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> RoomOut:
    if body.welcome is not None:
        clean_text(settings, body.welcome, "welcome")  # refused (422) before the room exists
    material = check_material(body.material) if body.material is not None else None  # likewise
    room = await run_in_threadpool(create_room, settings, redis, body.username, body.avatar_id, body.ttl_s, caller,
                                   language=body.language, responder=body.responder, system_prompt=body.system_prompt,
                                   llm_model=body.llm_model, job=body.job,
                                   barge_in=body.barge_in, keep_recordings=body.keep_recordings)
    if material is not None:
        await run_in_threadpool(MaterialStore(redis).put, room.id, material)
    if body.welcome:
        await run_in_threadpool(welcome, redis, settings, room, body.welcome)
    return await run_in_threadpool(room_out, RoomStore(redis, settings), room)



@router.get("", response_model=list[RoomOut], summary="Open rooms")
async def list_rooms(settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[RoomOut]:
    store = RoomStore(redis, settings)

    def _all():
        live = live_view(settings, redis)
        return [room_out(store, r, live) for r in store.list()
                if store.is_open(r.id) and caller.may_use(store.owner(r.id))]

    return await run_in_threadpool(_all)


@router.get("/{room_ref}", response_model=RoomOut, summary="A room by id, zbjname or stream key")
async def get(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> RoomOut:
    store = RoomStore(redis, settings)
    return await run_in_threadpool(lambda: room_out(store, get_room(store, room_ref, caller)))


@router.delete("/{room_ref}", status_code=204, summary="Close a room and stop its stream")
async def delete(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> None:
    store = RoomStore(redis, settings)
    room = await run_in_threadpool(get_room, store, room_ref, caller, True)
    await run_in_threadpool(store.close, room.id)


@router.post("/{room_ref}/say", status_code=202, response_model=SayAccepted,
             summary="Queue an utterance (text is synthesised first); utterances play in order")
async def say(room_ref: str, body: SayRequest, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> SayAccepted:
    store = RoomStore(redis, settings)
    room = await run_in_threadpool(get_room, store, room_ref, caller)
    if body.audio:
        ref, duration = await run_in_threadpool(lambda: owned_audio(settings, body.audio, settings.max_lipsync_audio_s,
                                                                    redis=redis, caller=caller))
        utt = await run_in_threadpool(lambda: store.say(room, audio=ref, duration_s=duration))
        return SayAccepted(utterance_id=utt.id, room_id=room.id, duration_s=round(duration, 3))
    await run_in_threadpool(store.check_room_queue, room)  # before a TTS job that could not be played
    job_id = await enqueue_tts(settings, redis, body.text or "", owner=caller.owner, room_id=room.id)
    utt = await run_in_threadpool(lambda: store.say(room, tts_job_id=job_id))
    return SayAccepted(utterance_id=utt.id, room_id=room.id, tts_job_id=job_id)


@router.post("/{room_ref}/interrupt", response_model=InterruptOut,
             summary="Stop the current utterance and clear the room's queue")
async def interrupt(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> InterruptOut:
    store = RoomStore(redis, settings)
    room = await run_in_threadpool(get_room, store, room_ref, caller)
    return InterruptOut(room_id=room.id, generation=await run_in_threadpool(store.interrupt, room.id))


@router.get("/{room_ref}/events", response_model=list[RoomEvent], summary="What the room's publisher did, newest last")
async def events(room_ref: str, settings: SettingsDep, redis: RedisDep, caller: CallerDep) -> list[RoomEvent]:
    store = RoomStore(redis, settings)
    room = await run_in_threadpool(get_room, store, room_ref, caller)
    return [RoomEvent(**e) for e in await run_in_threadpool(store.events, room.id)]
