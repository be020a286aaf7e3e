"""Avatars and lip-sync through the real service: the mouth must really follow the speech."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatars.demo import write_demo_portrait
from avatars.store import Avatar
from bench.mouth_sync import analyze
from conftest import poll_job, shared_media
from speech import upload_speech, wav_bytes

ZH_1 = "大家好，欢迎来到今天的直播间。"
ZH_2 = "我们现在开始面试，请先做一个简单的自我介绍。"


class CycleFrames(Sequence):
    """The avatar's source frames at the cycle positions an output used (decoded lazily)."""

    def __init__(self, avatar: Avatar, start: int, n: int) -> None:
        self.avatar, self.start, self.n = avatar, start, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not -self.n <= i < self.n:
            raise IndexError(i)  # Sequence iteration stops here; the cycle itself never ends
        return self.avatar.frame(self.start + i % self.n)


@pytest.fixture(scope="module")
def speech_with_pauses(api) -> str:
    """Two TTS sentences with pauses of 0.8-1.2 s around and between them, uploaded."""
    return upload_speech(api, [ZH_1, ZH_2], pause_s=1.2, lead_s=0.8)[0]


def _prepare(api, data: bytes, name: str, avatar_id: str, **form) -> dict:
    r = api.post("/v1/avatars", files={"file": (name, data)}, data={"avatar_id": avatar_id, **form})
    assert r.status_code == 202, r.text
    return poll_job(api, r.json()["job_id"], timeout=240)


def _render(api, **body) -> dict:
    r = api.post("/v1/lipsync", json=body)
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"], timeout=240)
    assert job["status"] == "finished", job
    return job


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)


def _check_mp4(path: Path, audio_s: float) -> dict:
    info = _ffprobe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p" and audio["codec_name"] == "aac"
    assert video["r_frame_rate"] == "25/1"
    frames = int(video["nb_frames"])
    assert abs(frames - round(audio_s * 25)) <= 1
    assert abs(float(video["duration"]) - float(audio["duration"])) <= 0.040
    head = path.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat")), \
        "moov atom must come first (+faststart)"
    return {"frames": frames}


def _sync_figures(api, data_dir: Path, job: dict, tmp_path: Path) -> dict:
    result = job["result"]
    video = tmp_path / f"{job['id']}.mp4"
    video.write_bytes(api.get(result["url"]).content)
    avatar = Avatar(data_dir / "avatars" / result["avatar_id"])
    return analyze(video, reference=CycleFrames(avatar, result["cycle_start"], result["frames"]))


def test_portrait_avatar_speaks_in_sync(api, service, portrait_avatar, speech_with_pauses, tmp_path):
    data_dir = service.data_dir
    meta = api.get(f"/v1/avatars/{portrait_avatar}").json()
    assert meta["status"] == "ready" and meta["manifest"]["kind"] == "image"
    assert meta["manifest"]["cycle_length"] == 2 * meta["manifest"]["frames"]
    job = _render(api, avatar_id=portrait_avatar, audio=speech_with_pauses)
    video = tmp_path / "out.mp4"
    video.write_bytes(api.get(job["result"]["url"]).content)
    _check_mp4(video, job["result"]["duration_s"])
    figures = _sync_figures(api, data_dir, job, tmp_path)
    assert figures["r"] >= 0.6, figures
    assert figures["silent_frames"] >= 25 and figures["closed_share_in_silence"] >= 0.9, figures
    assert figures["ssim_outside_mask"] >= 0.98, figures

    # Negative control: the same audio over a still frame of the avatar scores r ~ 0.
    still = tmp_path / "still.mp4"
    frame = Avatar(data_dir / "avatars" / portrait_avatar).frame(0)
    cv2.imwrite(str(tmp_path / "still.png"), frame)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "25", "-i", str(tmp_path / "still.png"),
                    "-i", str(video), "-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", "-c:a", "aac", str(still)], check=True)
    control = analyze(still)
    assert abs(control["r"]) < 0.3, control


def test_text_request_synthesises_then_renders_and_continues_the_cycle(api, portrait_avatar):
    first = _render(api, avatar_id=portrait_avatar, text=ZH_1, room="room-a")
    second = _render(api, avatar_id=portrait_avatar, text="Thank you, see you next time.", room="room-a")
    assert first["result"]["frames"] > 25
    # Speech the fleet synthesised drives the mouth with its own phone times (zh and en voices).
    assert first["result"]["phones"] is True and second["result"]["phones"] is True
    assert second["result"]["cycle_start"] == first["result"]["cycle_end"]
    cycle = api.get(f"/v1/avatars/{portrait_avatar}").json()["manifest"]["cycle_length"]
    assert first["result"]["cycle_end"] == (first["result"]["cycle_start"] + first["result"]["frames"]) % cycle
    mouth = api.get(f"/v1/jobs/{second['id']}/mouth").json()
    assert len(mouth["frames"]) == second["result"]["frames"]
    opens = [f["open"] for f in mouth["frames"]]
    assert max(opens) > 0.5 and min(opens) < 0.1


def test_avatar_cache_reused_and_rebuilt_on_parameter_change(api, portrait_avatar, tmp_path):
    png = write_demo_portrait(tmp_path / "a.png").read_bytes()
    again = _prepare(api, png, "a.png", portrait_avatar)
    assert again["result"]["reused"] is True
    changed = _prepare(api, png, "a.png", "astro-shift", bbox_shift="5")
    assert changed["result"]["reused"] is False
    listed = {a["id"] for a in api.get("/v1/avatars").json()}
    assert {"astro", "astro-shift"} <= listed
    assert api.delete("/v1/avatars/astro-shift").status_code == 204
    assert api.get("/v1/avatars/astro-shift").status_code == 404


# The real template's first 5 s (125 frames, a keyframe at 0: copied, not re-encoded; a copy cut at 100
# frames decodes to 101) and the real speech's first sentence (to 11.4 s, inside its first pause at
# 10.9-11.5 s): the same behaviour as the whole 22 s files, with the speech longer than the template's
# ping-pong cycle (10 s) so the cycle wraps. (200 frames made the preparation longer for nothing more shown.)
SUN_FRAMES, SUN_SPEECH_S = 125, 11.4


def test_sun_avatar_with_real_speech(api, service, tmp_path):
    video, speech = tmp_path / "avatar-sun.mp4", tmp_path / "speech-zh-sun.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(shared_media("avatar-sun.mp4")), "-frames:v",
                    str(SUN_FRAMES), "-c", "copy", str(video)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(shared_media("speech-zh-sun.wav")), "-t",
                    str(SUN_SPEECH_S), str(speech)], check=True)
    job = _prepare(api, video.read_bytes(), "avatar-sun.mp4", "sun")
    assert job["status"] == "finished", job
    assert job["result"]["frames"] == SUN_FRAMES
    up = api.post("/v1/files", files={"file": ("speech-zh-sun.wav", speech.read_bytes())}).json()
    render = _render(api, avatar_id="sun", audio=up["file"])
    out = tmp_path / "sun.mp4"
    out.write_bytes(api.get(render["result"]["url"]).content)
    _check_mp4(out, render["result"]["duration_s"])
    figures = _sync_figures(api, service.data_dir, render, tmp_path)
    assert figures["r"] >= 0.6, figures
    if figures["silent_frames"]:
        assert figures["closed_share_in_silence"] >= 0.9, figures
    assert figures["ssim_outside_mask"] >= 0.98, figures


# ---- bad inputs ----

def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    return r.json()


def test_lipsync_bad_requests(api, portrait_avatar, speech_with_pauses):
    _error(api.post("/v1/lipsync", json={"avatar_id": "nobody", "text": "hi"}), 404, "unknown_avatar")
    _error(api.post("/v1/lipsync", json={"avatar_id": portrait_avatar}), 422, "invalid_input")
    _error(api.post("/v1/lipsync", json={"avatar_id": portrait_avatar, "text": "hi", "audio": speech_with_pauses}),
           422, "invalid_input")
    _error(api.post("/v1/lipsync", json={"avatar_id": portrait_avatar, "audio": "/etc/passwd"}), 404,
           "file_not_owned")
    _error(api.post("/v1/lipsync", json={"avatar_id": portrait_avatar, "text": "hi", "engine": "musetalk"}), 422,
           "engine_unavailable")
    _error(api.post("/v1/lipsync", json={"avatar_id": "../../etc", "text": "hi"}), 422, "invalid_input")
    _error(api.get("/v1/jobs/0123456789abcdef/mouth"), 404, "unknown_job")


def test_lipsync_silent_and_too_long_audio(api, portrait_avatar):
    silent = api.post("/v1/files", files={"file": ("silence.wav", wav_bytes(np.zeros(32000), 16000))}).json()["file"]
    r = api.post("/v1/lipsync", json={"avatar_id": portrait_avatar, "audio": silent})
    job = poll_job(api, r.json()["job_id"])
    assert job["status"] == "failed" and "silent" in job["error"]["message"]
    tone = (np.sin(np.arange(16000 * 27) / 16000 * 2 * np.pi * 200) * 8000).astype(np.int16)
    long = api.post("/v1/files", files={"file": ("long.wav", wav_bytes(tone, 16000))}).json()["file"]
    _error(api.post("/v1/lipsync", json={"avatar_id": portrait_avatar, "audio": long}), 422, "audio_too_long")


def test_avatar_bad_inputs(api, tmp_path):
    _error(api.post("/v1/avatars", data={}), 400, "missing_parameter")
    _error(api.post("/v1/avatars", files={"file": ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 5000)}),
           422, "undecodable_video")
    blank = cv2.imencode(".png", np.full((400, 400, 3), 180, np.uint8))[1].tobytes()
    job = _prepare(api, blank, "blank.png", "blank")
    assert job["status"] == "failed" and job["error"]["code"] == "no_face", job
    portrait = cv2.imread(str(write_demo_portrait(tmp_path / "p.png")))
    twins = np.concatenate([portrait, portrait], axis=1)
    job = _prepare(api, cv2.imencode(".png", twins)[1].tobytes(), "twins.png", "twins")
    assert job["status"] == "failed" and job["error"]["code"] == "several_faces", job
    tiny = cv2.resize(portrait, (96, 96), interpolation=cv2.INTER_AREA)
    job = _prepare(api, cv2.imencode(".png", tiny)[1].tobytes(), "tiny.png", "tiny")
    assert job["status"] == "failed" and job["error"]["code"] in ("face_too_small", "no_face"), job
    # A video where half the frames show no face: the frames are listed.
    clip = tmp_path / "half.mp4"
    frames_dir = tmp_path / "half"
    frames_dir.mkdir()
    for i in range(50):
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), portrait if i < 25 else np.full_like(portrait, 90))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", "25", "-i", str(frames_dir / "%03d.png"),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    job = _prepare(api, clip.read_bytes(), "half.mp4", "half")
    assert job["status"] == "failed" and job["error"]["code"] == "frames_without_face", job
    assert set(job["error"]["details"]["frames"]) >= set(range(30, 50))
