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
        from models.lipsync.engines import load_engine

        engine = load_engine("musetalk", settings.models_dir)
    except (WeightsError, ImportError) as exc:
        log.info("preparing without MuseTalk latents: %s", exc)
        return None
    return engine.prepare_latents


def _enroll_options(settings: Settings):
    from avatars.enroll import EnrollOptions

    return EnrollOptions(min_duration_s=settings.min_sample_s, max_duration_s=settings.max_sample_s)


def _stage_sample(settings: Settings, template: Path, sample: str, out: Path, progress) -> Path:
    """Enroll the given sample beside the avatar first: a bad sample (or another person's) fails
    the job before the avatar is touched."""
    from avatars.enroll import enroll
    from avatars.identity import check_same_person

    sample_path = resolve_owned(settings, sample)
    check_same_person(template, sample_path)
    staged = out.with_name(f".{out.name}.mouth.building")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        enroll(sample_path, staged, _enroll_options(settings), progress=progress)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _enroll_from_template(settings: Settings, template: Path, out: Path, progress) -> None:
    """A template video that carries the presenter's speech teaches the mouth by itself; one that
    does not (silent, too short, an image) simply leaves the avatar on the fallback engine."""
    from avatars.enroll import enroll
    from avatars.mouthbank import bank_dir, enrollment

    if enrollment(out) is not None:
        return
    try:
        if not probe(template).has_audio:
            return
        enroll(template, bank_dir(out), _enroll_options(settings), progress=progress)
    except (AvatarError, MediaError) as exc:
        log.info("avatar %s: template not used for enrollment: %s", out.name, exc)


def prepare_avatar(source: str, avatar_id: str, options: dict | None = None, speech_sample: str | None = None) -> dict:
    """Job function of the `avatar` queue; `source` and `speech_sample` are files the service owns."""
    from avatars.mouthbank import bank_dir, enrollment

    settings = get_settings()
    job = get_current_job()
    opts = PrepareOptions(**(options or {}), max_duration_s=settings.max_avatar_s)
    path = resolve_owned(settings, source)
    out = avatar_dir(settings.data_dir, avatar_id)
    staged = _stage_sample(settings, path, speech_sample, out, lambda p: set_progress(job, 0.45 * p)) \
        if speech_sample else None
    base = 0.45 if staged else 0.0
    manifest = prepare(path, out, opts, progress=lambda p: set_progress(job, base + (0.85 - base) * p),
                       latent_encoder=_latent_encoder(settings) if settings.musetalk_latents else None)
    if staged is not None:
        shutil.rmtree(bank_dir(out), ignore_errors=True)
        staged.rename(bank_dir(out))
    elif manifest["kind"] == "video":
        _enroll_from_template(settings, path, out, lambda p: set_progress(job, 0.85 + 0.1 * p))
    # Encode the idle loop now, so a room opened with this avatar publishes at once.
    from avatars.idle_loop import load_idle_loop
    from avatars.store import Avatar

    load_idle_loop(Avatar.open(settings.data_dir, avatar_id), settings)
    set_progress(job, 0.99)
    result = {k: manifest[k] for k in ("id", "kind", "frames", "cycle_length", "width", "height", "fps",
                                       "has_latents", "reused", "prepare_s", "source_sha256")}
    return {**result, "enrollment": enrollment(out)}
