"""Enrollment checks the person (issue 19 item 1): a speech sample of someone else is refused with
`sample_other_person` and the avatar stays as it was; a sample of the same presenter is accepted;
an enrolled mouth that does not belong on the template is never pasted.

In-process (the avatar job function run here) on the shared real clips; skips without ../shared."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from avatars.prepare import AvatarError
from conftest import shared_media
from core.settings import get_settings


def _cut(src: Path, start: float, length: float, out: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(length), "-i", str(src),
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    woman, man, other = (shared_media(n) for n in ("avatar-sun.mp4", "real-talk-2.mp4", "real-talk-5.mp4"))
    data = tmp_path_factory.mktemp("data")
    mp = pytest.MonkeyPatch()
    mp.setenv("MTL_DATA_DIR", str(data))
    mp.setenv("MTL_MIN_SAMPLE_S", "2")
    get_settings.cache_clear()
    up = get_settings().kind_dir("uploads")
    _cut(woman, 0, 6, up / "sun.mp4")
    shutil.copy(man, up / "man.mp4")
    _cut(other, 0, 2.4, up / "rt5-first.mp4")
    _cut(other, 2.4, 2.5, up / "rt5-second.mp4")
    yield get_settings()
    mp.undo()
    get_settings.cache_clear()


def test_another_persons_sample_is_refused_and_the_avatar_stays(uploads):
    from workers.avatar import prepare_avatar

    prepare_avatar("uploads/sun.mp4", "sun", {})
    manifest = (uploads.data_dir / "avatars" / "sun" / "avatar.json").read_text()
    with pytest.raises(AvatarError) as refused:
        prepare_avatar("uploads/sun.mp4", "sun", {}, speech_sample="uploads/man.mp4")
    assert refused.value.code == "sample_other_person"
    assert "another person" in str(refused.value) and refused.value.details["score"] > 1.0
    assert (uploads.data_dir / "avatars" / "sun" / "avatar.json").read_text() == manifest
    assert not (uploads.data_dir / "avatars" / "sun" / "mouth").exists()


def test_the_same_presenters_sample_is_accepted(uploads):
    from lipsync.identity import check_same_person
    from workers.avatar import prepare_avatar

    up = uploads.kind_dir("uploads")
    assert check_same_person(up / "rt5-first.mp4", up / "rt5-second.mp4")["score"] < 1.0
    result = prepare_avatar("uploads/rt5-first.mp4", "rt5", {}, speech_sample="uploads/rt5-second.mp4")
    assert result["enrollment"] is not None and result["enrollment"]["frames_with_face"] > 50


def test_a_mouth_that_does_not_belong_is_never_pasted(uploads, tmp_path):
    """An enrollment that slipped through (the man's mouth on the woman's template) is refused at
    render time: the avatar speaks with the warp fallback instead of a smear."""
    import numpy as np

    from lipsync.enroll import enroll
    from lipsync.mouthbank import MouthBank, load_bank
    from avatars.store import Avatar
    from lipsync.exemplar import ExemplarEngine
    from lipsync.mouth import analyse

    engine = ExemplarEngine()
    own = Avatar.open(uploads.data_dir, "rt5")
    assert engine.fits(own, load_bank(own.path))
    enroll(uploads.kind_dir("uploads") / "man.mp4", tmp_path / "man-bank")
    assert not engine.fits(own, MouthBank.load(tmp_path / "man-bank"))
    assert engine.fits(own, load_bank(own.path)), "the verdict is kept per enrollment, not per bank object"

    # Forced through the store, the render still shows no pasted patch: every frame is warp's.
    shutil.rmtree(own.path / "mouth")
    shutil.copytree(tmp_path / "man-bank", own.path / "mouth")
    t = np.arange(16000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 160 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)
    track = analyse(speech, 25, 25)
    ours = list(engine.frames(own, speech, 0, 25, track))
    from lipsync.engines import AutoEngine, WarpEngine

    warp = list(WarpEngine().frames(own, speech, 0, 25, track))
    assert all(np.array_equal(a, b) for a, b in zip(ours, warp))
    assert AutoEngine(WarpEngine()).choose(own).name == "warp"  # and renders and rooms say so


def test_the_same_presenter_filmed_in_another_light_is_pasted(uploads, tmp_path):
    """A sample of the same presenter shot under another light (warmer, darker, less saturated: as
    another cut of the same interview) belongs on the template: the person check decides, not the
    colour departure, which refused long-cameron's own cuts (1.7-9x its bound)."""
    from avatars.store import Avatar
    from lipsync.enroll import enroll
    from lipsync.exemplar import ExemplarEngine
    from lipsync.mouthbank import MouthBank

    up = uploads.kind_dir("uploads")
    relit = tmp_path / "rt5-relit.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(up / "rt5-second.mp4"), "-vf",
                    "colorbalance=rs=0.2:gs=0.05:bs=-0.2,eq=brightness=-0.08:saturation=0.75",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy", str(relit)], check=True)
    enroll(relit, tmp_path / "relit-bank")
    bank = MouthBank.load(tmp_path / "relit-bank")
    assert bank.presenter is not None
    assert ExemplarEngine().fits(Avatar.open(uploads.data_dir, "rt5"), bank)
