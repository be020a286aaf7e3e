"""Avatar worker: a template video or portrait (+ optional talking sample) -> a prepared, cached
avatar under results/avatars/, enrolled with the presenter's own mouth when talking footage exists."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rq import get_current_job

from avatars.prepare import AvatarError, PrepareOptions, prepare
from avatars.store import avatar_dir
from core.files import resolve_owned
from core.jobs import set_progress
from core.media import MediaError, probe
from core.settings import Settings, get_settings
from models.weights import WeightsError

log = logging.getLogger(__name__)


def _latent_encoder(settings: Settings):
    """MuseTalk latents are cached only when the official weights are installed."""
    try:
        from lipsync.engines import load_engine

        engine = load_engine("musetalk", settings.models_dir)
    except (WeightsError, ImportError) as exc:
        log.info("preparing without MuseTalk latents: %s", exc)
        return None
    return engine.prepare_latents


def _enroll_options(settings: Settings):
    from lipsync.enroll import EnrollOptions

    return EnrollOptions(min_duration_s=settings.min_sample_s, max_duration_s=settings.max_sample_s)


def _stage_sample(settings: Settings, template: Path, sample: str, out: Path, progress) -> Path:
    """Enroll the given sample beside the avatar first: a bad sample (or another person's) fails
    the job before the avatar is touched."""
    from lipsync.identity import check_same_person

    sample_path = resolve_owned(settings, sample)
    check_same_person(template, sample_path)
    return _enroll_staged(settings, sample_path, out, progress)


def _enroll_staged(settings: Settings, sample: Path, out: Path, progress) -> Path:
    """The bank learned from `sample`, in a directory beside the avatar's (swapped in by the caller)."""
    from lipsync.enroll import enroll

    staged = out.with_name(f".{out.name}.mouth.building")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        enroll(sample, staged, _enroll_options(settings), progress=progress)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _swap_bank(staged: Path, out: Path) -> None:
    from lipsync.mouthbank import bank_dir

    shutil.rmtree(bank_dir(out), ignore_errors=True)
    staged.rename(bank_dir(out))


def reenroll_from_kept_sample(settings: Settings, avatar_id: str, progress) -> dict:
    """Learn the avatar's mouth again from its kept sample (the bank format changed); the avatar
    serves as it was until the new bank is swapped in."""
    from lipsync.mouthbank import enrollment
    from lipsync.upkeep import kept_sample

    out = avatar_dir(settings.data_dir, avatar_id)
    sample = kept_sample(out)
    if sample is None or enrollment(out) is not None:
        return {"id": avatar_id, "reenrolled": False, "enrollment": enrollment(out)}
    _swap_bank(_enroll_staged(settings, sample, out, progress), out)
    log.info("avatar %s re-enrolled from its kept sample", avatar_id)
    return {"id": avatar_id, "reenrolled": True, "enrollment": enrollment(out)}


def _enroll_from_template(settings: Settings, template: Path, out: Path, progress) -> None:
    """A template video that carries the presenter's speech teaches the mouth by itself; one that
    does not (silent, too short, an image) simply leaves the avatar on the fallback engine."""
    from lipsync.enroll import enroll
    from lipsync.mouthbank import bank_dir, enrollment

    if enrollment(out) is not None:
        return
    try:
        if not probe(template).has_audio:
            return
        enroll(template, bank_dir(out), _enroll_options(settings), progress=progress)
    except (AvatarError, MediaError) as exc:
        log.info("avatar %s: template not used for enrollment: %s", out.name, exc)


def prepare_avatar(source: str | None, avatar_id: str, options: dict | None = None, speech_sample: str | None = None,
                   reenroll: bool = False) -> dict:
    """Job function of the `avatar` queue; `source` and `speech_sample` are files the service owns.
    `reenroll`: no source, the avatar learns its mouth again from its kept sample (lipsync/upkeep.py)."""
    from lipsync.mouthbank import enrollment
    from lipsync.upkeep import SAMPLE_META, keep_sample

    settings = get_settings()
    job = get_current_job()
    if reenroll:
        return reenroll_from_kept_sample(settings, avatar_id, lambda p: set_progress(job, 0.95 * p))
    opts = PrepareOptions(**(options or {}), max_duration_s=settings.max_avatar_s)
    path = resolve_owned(settings, source)
    out = avatar_dir(settings.data_dir, avatar_id)
    staged = _stage_sample(settings, path, speech_sample, out, lambda p: set_progress(job, 0.45 * p)) \
        if speech_sample else None
    base = 0.45 if staged else 0.0
    manifest = prepare(path, out, opts, progress=lambda p: set_progress(job, base + (0.85 - base) * p),
                       latent_encoder=_latent_encoder(settings) if settings.musetalk_latents else None)
    if staged is not None:
        _swap_bank(staged, out)
        keep_sample(out, resolve_owned(settings, speech_sample), "speech_sample")
    elif manifest["kind"] == "video":
        _enroll_from_template(settings, path, out, lambda p: set_progress(job, 0.85 + 0.1 * p))
        if enrollment(out) is not None and not (out / SAMPLE_META).exists():
            keep_sample(out, path, "template")
    # Encode the idle loop now, so a room opened with this avatar publishes at once.
    from avatars.idle_loop import load_idle_loop
    from avatars.store import Avatar

    avatar = Avatar.open(settings.data_dir, avatar_id)
    load_idle_loop(avatar, settings)
    if enrollment(out) is not None:
        # Read now, so the first render does not wait for the person check (ExemplarEngine.fits).
        from lipsync.identity import presenter_of_avatar

        presenter_of_avatar(avatar)
    set_progress(job, 0.99)
    result = {k: manifest[k] for k in ("id", "kind", "frames", "cycle_length", "width", "height", "fps",
                                       "has_latents", "reused", "prepare_s", "source_sha256")}
    return {**result, "enrollment": enrollment(out)}


def warm_up(settings: Settings) -> None:
    """At start (a new release may change the bank format): re-enroll outdated avatars in the background."""
    from lipsync.upkeep import enqueue_stale
    from core.jobs import redis_connection

    try:
        enqueue_stale(settings, redis_connection(settings))
    except Exception:  # upkeep must never keep a worker from serving
        log.exception("could not look for avatars to re-enroll")
