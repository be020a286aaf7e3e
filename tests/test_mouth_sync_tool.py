"""bench.mouth_sync against controls whose answer is known.

Negative: a still portrait muxed with speech (also with a brightness flicker that follows the speech,
the trick users complained about) must not count as talking. Positive: a portrait whose lower lip
and chin are warped down in proportion to the speech envelope must. The warp is only a fixture to
prove the tool sees real mouth motion; it is not a renderer.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.signal import butter, sosfilt
from skimage import data

from bench import mouth_sync as ms
from conftest import ROOT, shared_media
from core.media import run_ffmpeg, write_wav

FPS = 25
SR = ms.SAMPLE_RATE
SPEECH_S = 12.0  # 300 frames per control video: every figure asserted below holds with room (20 s took 40% more CPU)
MOUTH_INTERIOR_BGR = (35, 25, 60)


# ---------------------------------------------------------------------------------- fixtures

def speechlike(seed: int, duration_s: float) -> np.ndarray:
    """Syllable-shaped bursts of a voiced buzz, 3-7 per word, words separated by 0.65-1.0 s pauses."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * SR)
    envelope = np.zeros(n)
    t = 0.4
    while t < duration_s - 1.2:
        for _ in range(rng.integers(3, 8)):
            length = rng.uniform(0.14, 0.3)
            a, b = int(t * SR), int((t + length) * SR)
            envelope[a:b] = rng.uniform(0.4, 1.0) * np.hanning(b - a)
            t += length + rng.uniform(0.03, 0.08)
        t += rng.uniform(0.65, 1.0)
    times = np.arange(n) / SR
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * times)
    buzz = 0.5 * np.sign(np.sin(2 * np.pi * np.cumsum(f0) / SR)) + rng.normal(0, 0.3, n)
    buzz = sosfilt(butter(4, [100, 3000], btype="band", fs=SR, output="sos"), buzz)
    audio = 0.3 * envelope * buzz / np.abs(buzz).max() + rng.normal(0, 1e-4, n)
    return audio.astype(np.float32)


def portrait() -> np.ndarray:
    """skimage's astronaut (public domain), cropped to head and shoulders to keep the videos small."""
    return np.ascontiguousarray(data.astronaut()[0:320, 64:384, ::-1])


def open_mouth(image: np.ndarray, points: np.ndarray, amount: float, max_open: float = 0.35,
               up_share: float = 0.3) -> np.ndarray:
    """Part the lips by amount * max_open * face scale: the lower lip and chin are pulled down, the
    upper lip up a little, and the gap between them is painted as a dark mouth interior."""
    out = image.copy()
    gap = float(amount) * max_open * ms.face_scale(points)
    if gap < 0.25:
        return out
    mid = (points[13] + points[14]) / 2
    half_width = np.linalg.norm(points[78] - points[308]) / 2
    chin, nose = points[152][1], points[2][1]
    bottom = chin + (chin - mid[1]) + gap
    # Only this box changes; warping just it keeps a 550-frame real-video fixture cheap.
    h, w = image.shape[:2]
    x0, x1 = max(0, int(mid[0] - 1.5 * half_width)), min(w, int(mid[0] + 1.5 * half_width) + 1)
    y0, y1 = max(0, int(nose)), min(h, int(bottom) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    across = np.sqrt(np.clip(1 - ((xx - mid[0]) / half_width) ** 2, 0, 1))
    down, up = (1 - up_share) * gap * across, up_share * gap * across
    fade_down = np.clip((bottom - yy) / (bottom - mid[1]), 0, 1)
    fade_up = np.clip((yy - nose) / (mid[1] - nose), 0, 1)
    src_y = np.where(yy > mid[1], yy - down * fade_down, yy + up * fade_up)
    box = cv2.remap(image, xx, src_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    box[(yy > mid[1] - up) & (yy < mid[1] + down)] = MOUTH_INTERIOR_BGR
    out[y0:y1, x0:x1] = box
    return out


def write_video(path: Path, frames, fps: float, wav: Path | None = None) -> Path:
    """H.264 (crf 16) + AAC. Frames go through a raw file, written as they come, so a long real
    video is never held in memory twice."""
    raw = path.with_suffix(".bgr")
    size = None
    with raw.open("wb") as sink:
        for frame in frames:
            size = size or frame.shape[:2]
            sink.write(np.ascontiguousarray(frame).tobytes())
    h, w = size
    args = ["-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps),
            "-i", str(raw)]
    if wav is not None:
        args += ["-i", str(wav), "-c:a", "aac", "-b:a", "96k", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p", str(path)]
    try:
        run_ffmpeg(args)
    finally:
        raw.unlink(missing_ok=True)
    return path


def flicker(frames, gains):
    return (cv2.convertScaleAbs(f, alpha=float(g)) for f, g in zip(frames, gains))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mouth_sync")


@pytest.fixture(scope="module")
def speech(work):
    audio = speechlike(1, SPEECH_S)
    wav = work / "speech.wav"
    write_wav(wav, audio, SR)
    n = int(SPEECH_S * FPS)
    return wav, ms.read_audio(wav), ms.speech_envelope(audio, FPS, n)


@pytest.fixture(scope="module")
def face():
    image = portrait()
    with ms.FaceLandmarker(static_image_mode=True) as landmarker:
        points = landmarker(image)
    assert points is not None, "face mesh must find the astronaut's face"
    return image, points


@pytest.fixture(scope="module")
def videos(work, speech, face):
    """Encoded test videos with the speech track, made on first use."""
    wav, _, envelope = speech
    image, points = face
    n = envelope.size
    recipes = {
        "still": lambda: [image] * n,
        "flicker": lambda: flicker([image] * n, 1 + 0.12 * envelope),  # brightness follows the speech
        "talking": lambda: (open_mouth(image, points, e) for e in envelope),
        "delayed": lambda: (open_mouth(image, points, e) for e in np.concatenate([[0, 0], envelope[:-2]])),
        "shifted": lambda: (open_mouth(image, points, e) for e in np.roll(envelope, 7 * FPS)),
    }
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = write_video(work / f"{name}.mp4", recipes[name](), FPS, wav)
        return made[name]

    return get


@pytest.fixture(scope="module")
def analyzed(videos):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = ms.analyze(videos(name))
        return cache[name]

    return get


# ------------------------------------------------------------------------------ pure functions

def smooth_noise(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.convolve(rng.normal(size=n + 4), np.ones(5) / 5, mode="valid")


def test_best_lag_correlation_finds_the_shift():
    env = smooth_noise(300)
    delayed = np.concatenate([[np.nan, np.nan], env[:-2]])  # the mouth follows the sound by 2 frames
    r, lag = ms.best_lag_correlation(delayed, env, max_lag=2)
    assert r == pytest.approx(1.0, abs=1e-9) and lag == 2
    r, lag = ms.best_lag_correlation(env[2:], env[:-2], max_lag=2)  # the mouth leads by 2 frames
    assert r == pytest.approx(1.0, abs=1e-9) and lag == -2
    r, lag = ms.best_lag_correlation(np.concatenate([[np.nan] * 3, env[:-3]]), env, max_lag=2)
    assert r < 0.99  # outside the searched lags


def test_correlation_is_zero_for_constant_or_missing_series():
    env = smooth_noise(200)
    assert ms.best_lag_correlation(np.full(200, 0.12), env) == (0.0, 0)
    assert ms.best_lag_correlation(np.full(200, np.nan), env) == (0.0, 0)
    assert ms.best_lag_correlation(smooth_noise(200, 1), np.zeros(200))[0] == 0.0
    with_gaps = env.copy()
    with_gaps[::7] = np.nan  # frames without a face are skipped, not zero-filled
    assert ms.best_lag_correlation(with_gaps, env)[0] == pytest.approx(1.0, abs=1e-9)
    assert abs(ms.pearson(smooth_noise(5000, 2), smooth_noise(5000, 3))) < 0.1


def tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def gap(seconds: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, noise, int(seconds * SR))).astype(np.float32)


@pytest.mark.parametrize("noise", [0.0, 0.003])  # digital silence, and room noise ~40 dB under the speech
def test_silent_frames_only_in_long_pauses(noise):
    audio = np.concatenate([tone(1.0), gap(0.4, noise), tone(1.0), gap(0.8, noise, 1), tone(1.0)])
    n = int(round(audio.size / SR * FPS))  # 105 frames
    mask = ms.silent_frames(audio, FPS, n, min_silence_s=0.5)
    assert mask.shape == (n,) and mask.dtype == bool
    assert not mask[:60].any(), "a 0.4 s pause is not a silence"
    assert mask[60:80].all() and not mask[80:].any(), "the 0.8 s pause is frames 60..79"
    guarded = ms.silent_frames(audio, FPS, n, min_silence_s=0.5, guard_frames=2)
    assert np.flatnonzero(guarded).tolist() == list(range(62, 78))
    assert ms.silent_frames(audio, FPS, n, min_silence_s=0.3)[25:35].all()


def test_silent_frames_absolute_floor_and_audio_shorter_than_video():
    assert ms.silent_frames(np.zeros(SR * 2, np.float32), FPS, 50).all()
    audio = tone(1.0)
    mask = ms.silent_frames(audio, FPS, 50)  # the video runs 1 s past the audio
    assert not mask[:25].any() and mask[25:].all()


def test_speech_envelope_follows_energy():
    audio = np.concatenate([gap(1.0), tone(1.0), tone(1.0, 0.03), gap(1.0)])
    env = ms.speech_envelope(audio, FPS, 100)
    assert env.shape == (100,) and env.min() >= 0 and env.max() <= 1
    assert env[2:23].max() == 0 and env[77:].max() == 0
    assert env[28:48].min() == pytest.approx(1.0, abs=0.01) and 0.3 < env[55:70].mean() < 0.6  # -20 dB of a 40 dB range


def test_closed_share_uses_the_rest_state():
    openings = np.array([0.08, 0.09, 0.30, 0.25, 0.085, np.nan, 0.11, 0.4])
    silent = np.array([True, True, True, False, True, True, True, False])
    threshold = ms.closed_threshold(openings)
    assert threshold == pytest.approx(np.nanpercentile(openings, 5) + ms.CLOSED_MARGIN)
    # silent frames with a face: 0.08, 0.09, 0.30, 0.085, 0.11 -> four are within rest + margin
    assert ms.closed_share(openings, silent) == pytest.approx(4 / 5)
    assert ms.closed_share(openings, silent, threshold=0.05) == 0.0
    assert np.isnan(ms.closed_share(openings, np.zeros(8, bool)))
    assert ms.closed_threshold(np.full(10, 0.3)) == pytest.approx(ms.REST_CAP + ms.CLOSED_MARGIN)


def test_mouth_openings_are_repeatable_and_nan_without_face(face):
    image, points = face
    frames = [image, open_mouth(image, points, 0.6), open_mouth(image, points, 1.0), np.zeros_like(image), image]
    first, second = ms.mouth_openings(frames), ms.mouth_openings(frames)
    np.testing.assert_array_equal(first, second)
    assert np.isnan(first[3]) and np.isfinite(first[[0, 1, 2, 4]]).all()
    assert first[0] < first[1] < first[2], "a wider warp must measure as a wider opening"
    assert 0.05 < first[0] < 0.2


# -------------------------------------------------------------------------- negative controls

@pytest.mark.parametrize("name", ["still", "flicker"])
def test_still_portrait_is_not_talking(analyzed, name):
    res = analyzed(name)
    assert res["frames"] == int(SPEECH_S * FPS) and res["face_detected_share"] == 1.0
    assert abs(res["r"]) < 0.3 and abs(res["r_syllable"]) < 0.3
    assert res["motion_range"] < ms.MIN_MOTION and res["verdict"] == "static_mouth"
    assert res["silent_frames"] > 50 and res["closed_share_in_speech"] == 1.0


def test_flicker_jitter_would_fool_a_bare_correlation(analyzed):
    """Why r needs a motion floor: landmarks jitter with the brightness by a fraction of a pixel,
    and Pearson r scales that jitter up to a sizeable correlation."""
    res = analyzed("flicker")
    assert res["r"] == 0.0
    assert res["r_raw"] > analyzed("still")["r_raw"]


def test_mouth_driven_by_shifted_speech_is_not_in_sync(analyzed):
    res = analyzed("shifted")
    assert res["motion_range"] > 0.1, "the mouth moves as much as in the positive control"
    assert res["r"] < 0.3 and res["r_syllable"] < 0.3
    assert res["verdict"] == "unsynced"
    assert res["closed_share_in_silence"] < 0.9


# -------------------------------------------------------------------------- positive controls

def test_mouth_following_speech_is_detected(analyzed):
    res = analyzed("talking")
    assert res["r"] >= 0.6 and res["r_syllable"] >= 0.5
    assert abs(res["lag_frames"]) <= 1
    assert res["closed_share_in_silence"] >= 0.9 and res["closed_share_in_speech"] < 0.5
    assert res["open_std_speech"] > 3 * res["open_std_silence"]
    assert res["verdict"] == "synced"


def test_a_late_mouth_is_found_at_its_lag(analyzed):
    res = analyzed("delayed")
    assert res["r"] >= 0.6 and res["lag_frames"] == 2


# ------------------------------------------------------------------------------- outside SSIM

def every(path: Path, step: int) -> list[np.ndarray]:
    return list(itertools.islice(ms.iter_video_frames(path), 0, None, step))


def test_ssim_outside_the_lower_face(videos, face, work):
    image, points = face
    talking, flickered = every(videos("talking"), 10), every(videos("flicker"), 10)
    blurred = [cv2.GaussianBlur(f, (0, 0), 1.5) for f in talking]

    talking_stats = ms.outside_mask_stats(talking, image)
    kept = ms.ssim_outside_mask(talking, image)
    assert kept == talking_stats["ssim_outside_mask"] >= 0.98

    frame_dir = work / "source_frames"
    frame_dir.mkdir(exist_ok=True)
    cv2.imwrite(str(frame_dir / "000000.png"), image)
    assert ms.ssim_outside_mask(talking, frame_dir) == pytest.approx(kept)

    excluded = ms.lower_face_mask(points, image.shape)
    pixel = lambda i: tuple(np.round(points[i][::-1]).astype(int))  # noqa: E731  (row, col) of a landmark
    assert excluded[pixel(14)] and excluded[pixel(152)] and excluded[pixel(2)]
    for eye in (33, 263, 145, 374):  # outer corners and lower lids
        assert not excluded[pixel(eye)], "the eyes are outside the blend region"
    assert ms.ssim_outside_mask(talking, image, masks=[excluded]) == pytest.approx(kept)
    # Without the mask the warped mouth itself would count against the video.
    assert ms.ssim_outside_mask(talking, image, masks=[np.zeros(image.shape[:2], bool)]) < kept - 0.005

    assert ms.ssim_outside_mask(blurred, image) < kept - 0.05
    flicker_stats = ms.outside_mask_stats(flickered, image)
    assert flicker_stats["ssim_outside_mask"] < kept
    # SSIM is built to forgive brightness; the luma shift is what exposes a flicker.
    assert flicker_stats["outside_luma_shift_mean"] > talking_stats["outside_luma_shift_mean"] + 2


def test_ssim_map_is_skimages(face):
    """The tool's SSIM map is skimage's structural_similarity (7x7 window, full map), computed faster."""
    from skimage.metrics import structural_similarity

    image, _ = face
    gray = ms.to_gray(image)
    rng = np.random.default_rng(0)
    pairs = [(gray, cv2.GaussianBlur(gray, (0, 0), 1.5)), (gray, np.roll(gray, 3, axis=1)),
             tuple(rng.integers(0, 256, (2, 37, 53), np.uint8))]  # odd sizes: every border reflected
    for a, b in pairs:
        expected = structural_similarity(a, b, data_range=255, full=True)[1]
        np.testing.assert_allclose(ms.ssim_map(a, b), expected, rtol=0, atol=1e-9)


def test_cli_prints_one_json_object(work, speech, face):
    clip = write_video(work / "short-still.mp4", [face[0]] * 4 * FPS, FPS, speech[0])
    out = work / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.mouth_sync", str(clip), "--reference", str(clip), "--ssim-stride", "10",
         "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    printed = json.loads(proc.stdout)  # exactly one JSON object, nothing else on stdout
    assert printed == json.loads(out.read_text())
    assert printed["benchmark"] == "mouth_sync" and printed["audio"] == str(clip)
    for key in ("frames", "fps", "duration_s", "face_detected_share", "r", "lag_frames", "open_mean", "open_std",
                "silent_frames", "closed_share_in_silence", "ssim_outside_mask"):
        assert key in printed
    assert printed["frames"] == 4 * FPS and printed["ssim_frames"] == 10
    assert printed["verdict"] == "static_mouth" and printed["ssim_outside_mask"] == pytest.approx(1.0, abs=1e-3)

    no_audio = write_video(work / "no-audio.mp4", [face[0]] * FPS, FPS)
    refused = subprocess.run([sys.executable, "-m", "bench.mouth_sync", str(no_audio)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--audio" in refused.stderr and refused.stdout == ""


# ------------------------------------------------------------------------------- real media

@pytest.fixture(scope="module")
def sun():
    """The real avatar template (idle, mouth shut), its landmarks and real Mandarin speech."""
    avatar, speech_wav = shared_media("avatar-sun.mp4"), shared_media("speech-zh-sun.wav")
    points = ms.face_landmarks(ms.iter_video_frames(avatar))
    return avatar, speech_wav, ms.read_audio(speech_wav), ms.video_fps(avatar), points


def test_real_avatar_idle_is_not_talking(sun):
    """Head motion with a shut mouth moves the landmarks, but not with the speech."""
    _, _, audio, fps, points = sun
    openings = np.array([ms.opening_from_landmarks(p) for p in points])
    assert np.isfinite(openings).all()
    assert np.nanpercentile(openings, 95) < ms.REST_CAP, "a shut mouth measures under the rest cap"
    idle = ms.sync_figures(openings, audio, fps)
    assert abs(idle["r_raw"]) < 0.3 and idle["r"] == 0.0 and idle["verdict"] == "static_mouth"
    assert idle["silent_frames"] >= 20 and idle["closed_share_in_silence"] == 1.0
    assert idle["closed_share_in_speech"] >= 0.95
    still = ms.sync_figures(np.full(len(openings), openings[0]), audio, fps)  # one photo, repeated
    assert still["r"] == 0.0 and still["r_raw"] == 0.0


def test_real_avatar_with_a_mouth_following_mandarin_speech(sun, work):
    avatar, speech_wav, audio, fps, points = sun
    envelope = ms.speech_envelope(audio, fps, len(points))
    talking = (open_mouth(f, p, e) for f, p, e in zip(ms.iter_video_frames(avatar), points, envelope))
    video = write_video(work / "sun-talking.mp4", talking, fps, speech_wav)
    res = ms.analyze(video, reference=avatar, ssim_stride=25)
    assert res["face_detected_share"] == 1.0
    assert res["r"] >= 0.6 and abs(res["lag_frames"]) <= 1 and res["verdict"] == "synced"
    assert res["closed_share_in_silence"] >= 0.9
    assert res["ssim_outside_mask"] >= 0.98 and res["ssim_frames"] == 22
