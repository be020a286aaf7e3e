"""Hostile inputs from the issue's "Inputs" part, each against the real service: client text that
would become a subprocess option, playlists and manifests that make ffmpeg open further files,
unknown or lying durations, decompression bombs and oversized JSON bodies."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import poll_job
from speech import tone_wav
from core.media import run_ffmpeg


def _refused(r) -> dict:
    """A 4xx answer in the /v1 JSON error shape (never a 2xx, never a 5xx)."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"]["code"] and body["error"]["message"], body
    return body


def _tone(tmp_path: Path, name: str, seconds: float = 2.0, *codec: str) -> Path:
    path = tmp_path / name
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"sine=f=220:d={seconds}", "-ar", "16000", *codec, str(path)])
    return path


# ---- (a) TTS text is never an espeak-ng option ----

def test_tts_text_is_not_an_espeak_file_option(api):
    r = api.post("/v1/tts", json={"text": "-f/etc/os-release", "language": "other"})
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"])
    assert job["status"] == "finished", job
    assert job["result"]["engines"] == ["espeak"]
    # Spoken literally the text lasts about 2 s; read as `-f FILE` it read the whole file (31 s).
    assert job["result"]["duration_s"] < 6.0, job["result"]


def test_tts_text_is_not_an_espeak_output_option(api, tmp_path):
    target = tmp_path / "written-by-espeak.wav"
    r = api.post("/v1/tts", json={"text": f"-w{target}", "language": "other"})
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"])
    assert not target.exists(), "espeak-ng took the text as `-w FILE`"
    # As an option the text left espeak-ng nothing to say and the job failed; as text it is spoken.
    assert job["status"] == "finished" and job["result"]["duration_s"] > 0.5, job


# ---- (b)-(d) containers that open further files ----

def test_ffconcat_upload_is_refused(api):
    up = api.post("/v1/files", files={"file": ("tone.wav", tone_wav(2.0))})
    assert up.status_code == 201, up.text
    name = up.json()["file"].split("/")[-1]
    # 500 references to the same 2 s upload: 1000 s of audio behind a few KB, with no duration to check.
    playlist = ("ffconcat version 1.0\n" + f"file '{name}'\n" * 500).encode()
    for ext in ("wav", "mp3"):
        _refused(api.post("/v1/files", files={"file": (f"list.{ext}", playlist)}))
        _refused(api.post("/v1/asr", files={"file": (f"list.{ext}", playlist)}))


def _mpd(base_url: str, mime: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S" minBufferTime="PT1S"
     profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
 <Period>
  <AdaptationSet mimeType="{mime}">
   <Representation id="r" bandwidth="256000"><BaseURL>{base_url}</BaseURL></Representation>
  </AdaptationSet>
 </Period>
</MPD>
""".encode()


def test_dash_manifest_upload_is_refused(api, tmp_path):
    secret_audio = _tone(tmp_path, "secret.m4a", 2.0, "-c:a", "aac")
    manifest = _mpd(f"file://{secret_audio}", "audio/mp4")
    _refused(api.post("/v1/files", files={"file": ("clip.mp4", manifest)}))
    _refused(api.post("/v1/asr", files={"file": ("clip.mp4", manifest)}))
    secret_video = tmp_path / "secret.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:d=2", "-c:v", "libx264",
                "-pix_fmt", "yuv420p", str(secret_video)])
    _refused(api.post("/v1/avatars", files={"file": ("template.mp4", _mpd(f"file://{secret_video}", "video/mp4"))}))


def test_hls_playlist_upload_is_refused(api, tmp_path):
    segment = _tone(tmp_path, "segment.mp3", 2.0)
    playlist = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
                + f"#EXTINF:2.0,\n{segment}\n" * 5 + "#EXT-X-ENDLIST\n").encode()
    for name in ("speech.mp3", "speech.wav", "speech.m4a"):
        _refused(api.post("/v1/files", files={"file": (name, playlist)}))
    _refused(api.post("/v1/asr", files={"file": ("speech.mp3", playlist)}))


# ---- (e) decompression bomb ----

def test_huge_image_is_refused_before_decoding(api):
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((10000, 10000), np.uint8))  # 100 Mpx, a few hundred KB
    assert ok
    r = api.post("/v1/avatars", files={"file": ("portrait.png", png.tobytes())})
    if r.status_code >= 400:
        assert _refused(r)["error"]["code"] == "image_too_large"
        return
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"], timeout=180)
    assert job["status"] == "failed" and job["error"].get("code") == "image_too_large", job


def test_avatar_preparation_bounds_pixels_before_decoding(tmp_path):
    """The worker's own check, for files that reach it without the upload's (owned sources, tools)."""
    import cv2

    from avatars.prepare import AvatarError, PrepareOptions, _open_video, _read_image

    png = tmp_path / "portrait.png"
    cv2.imwrite(str(png), np.zeros((10000, 10000), np.uint8))
    misnamed = tmp_path / "portrait.mp4"  # not read as a picture by name: the video path must bound it too
    misnamed.write_bytes(png.read_bytes())
    for attempt in (lambda: _read_image(png, 1280), lambda: _open_video(misnamed, PrepareOptions())):
        with pytest.raises(AvatarError) as refused:
            attempt()
        assert refused.value.code == "image_too_large"
    cv2.imwrite(str(tmp_path / "small.png"), np.full((300, 200, 3), 128, np.uint8))
    assert _read_image(tmp_path / "small.png", 1280).shape == (300, 200, 3)


# ---- (f) JSON bodies are bounded ----

def test_json_body_is_bounded(api):
    big = b'{"text": "' + b"a" * (1024 * 1024) + b'"}'
    r = api.post("/v1/tts", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and _refused(r)["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the size is only known while reading
        for i in range(0, len(big), 16384):
            yield big[i:i + 16384]

    r = api.post("/v1/tts", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and _refused(r)["error"]["code"] == "body_too_large"
    # Outside /v1 the legacy shape keeps its `message`.
    r = api.post("/tts", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["message"], r.text
    # A normal body still goes through.
    assert api.post("/v1/tts", json={"text": "Still fine."}).status_code == 202


# ---- (g) lying lengths ----

def _lying_wav() -> bytes:
    data = bytearray(tone_wav(1.0))
    data[4:8] = struct.pack("<I", 0x7FFFFFF0)
    at = data.find(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0x7FFFFFF0)  # claims ~18 h of samples; holds 1 s
    return bytes(data)


def test_wav_claiming_huge_length_is_handled_cleanly(api):
    r = api.post("/v1/files", files={"file": ("lying.wav", _lying_wav())})
    assert r.status_code < 500 and r.headers["content-type"].startswith("application/json"), r.text
    if r.status_code >= 400:
        _refused(r)
        return
    assert r.status_code == 201 and r.json()["duration_s"] < 2.0, r.text
    job = poll_job(api, api.post("/v1/asr", data={"source": r.json()["file"]}).json()["job_id"])
    assert job["status"] in ("finished", "failed") and (job["status"] == "finished" or job["error"]["message"])


def _mp3_claiming_short_length(tmp_path: Path) -> Path:
    """60 s of MP3 whose Info header claims 40 frames (~1.4 s): the decoder reads on to the end."""
    path = _tone(tmp_path, "long.mp3", 60.0, "-ac", "1", "-b:a", "32k")
    data = bytearray(path.read_bytes())
    at = data.find(b"Info")
    assert at > 0
    data[at + 8:at + 12] = struct.pack(">I", 40)
    path.write_bytes(bytes(data))
    return path


def test_decoding_stops_near_the_declared_length(tmp_path):
    from core.media import decode_audio, probe

    path = _mp3_claiming_short_length(tmp_path)
    declared = probe(path).duration_s
    assert declared < 2.0
    decoded_s = decode_audio(path).size / 16000
    assert decoded_s < declared + 10, f"decoded {decoded_s:.0f} s of a file that declared {declared:.1f} s"


def test_mp3_lying_about_its_length_is_handled_cleanly(api, tmp_path):
    path = _mp3_claiming_short_length(tmp_path)
    r = api.post("/v1/asr", files={"file": ("short.mp3", path.read_bytes())}, data={"language": "en"})
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"])
    assert job["status"] in ("finished", "failed"), job
    if job["status"] == "failed":
        assert job["error"]["type"] == "MediaError", job


def test_streamed_webm_without_declared_duration_is_measured(tmp_path):
    """Browser recordings (MediaRecorder) carry no duration: it is measured from the packets, not taken as 0."""
    from core.media import probe

    path = tmp_path / "recorded.webm"
    path.write_bytes(run_ffmpeg(["-f", "lavfi", "-i", "sine=f=220:d=3", "-c:a", "libopus", "-f", "webm", "pipe:1"]))
    assert 2.5 < probe(path).duration_s < 3.5
