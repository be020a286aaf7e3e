"""Avatar worker: a template video or portrait -> a prepared, cached avatar under results/avatars/."""

from __future__ import annotations

import logging

from rq import get_current_job

from avatars.prepare import PrepareOptions, prepare
from avatars.store import avatar_dir
from core.files import resolve_owned
from core.jobs import set_progress
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


def prepare_avatar(source: str, avatar_id: str, options: dict | None = None) -> dict:
    """Job function of the `avatar` queue; `source` is a file the service owns."""
    settings = get_settings()
    job = get_current_job()
    opts = PrepareOptions(**(options or {}), max_duration_s=settings.max_avatar_s)
    path = resolve_owned(settings, source)
    manifest = prepare(path, avatar_dir(settings.data_dir, avatar_id), opts,
                       progress=lambda p: set_progress(job, p),
                       latent_encoder=_latent_encoder(settings) if settings.musetalk_latents else None)
    # Encode the idle loop now, so a room opened with this avatar publishes at once.
    from avatars.idle_loop import load_idle_loop
    from avatars.store import Avatar

    load_idle_loop(Avatar.open(settings.data_dir, avatar_id), settings)
    set_progress(job, 0.99)
    return {k: manifest[k] for k in ("id", "kind", "frames", "cycle_length", "width", "height", "fps",
                                     "has_latents", "reused", "prepare_s", "source_sha256")}
