"""Every ffmpeg/ffprobe call goes through here: argv lists, stderr captured into the error."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError  # loaded once: the header check is on every probe

log = logging.getLogger(__name__)

# Demuxers a client file may be opened with (names as ffprobe reports them in format_name; the
# first name of a list such as "mov,mp4,m4a,3gp,3g2,mj2" stands for all of it). None of them
# opens further files or URLs; flv and mpegts are what live rooms publish and viewers record.
# Left out on purpose: concat/ffconcat, hls, dash, sdp, image2 (file name patterns), lavfi, tee
# and every other format that reads what its content names, and the many exotic demuxers no
# client needs (less parser surface). GIF and TIFF are not accepted either.
ACCEPTED_FORMATS = ("wav", "mp3", "mov", "matroska", "ogg", "flac", "aac", "avi", "flv", "mpegts",
                    "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe")
# Single pictures: they legitimately have no duration.
STILL_IMAGE_FORMATS = ("png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe")
# Whatever a caller's limits, no client file is decoded past this.
MAX_DECODE_S = 3600.0
# A decoded picture above this is refused: a 10000x10000 PNG is a few hundred KB on the wire and
# 300 MB once decoded.
MAX_IMAGE_PIXELS = 40_000_000
# Address space of every ffmpeg/ffprobe the service runs (RLIMIT_AS, set by util-linux `prlimit`
# around the exec, so no Python runs in the child): a file crafted to make a decoder allocate
# without bound fails there instead of taking the machine's memory. A 720p x264 encode and a
# decode fit in 1 GB (measured); glibc's per-thread malloc arenas are capped so the limit means
# the same on a machine with many cores.
MEDIA_MAX_MEMORY_BYTES = 2 * 1024**3
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # what PIL may identify; it reads their headers only
_NOT_ON_WHITELIST = re.compile(r"\[(\w+) @ 0x[0-9a-f]+\] Format not on whitelist")


class MediaError(ValueError):
    """Input media that cannot be decoded or does not meet the limits."""


class MediaRefused(MediaError):
    """Media refused by policy (container, duration); the message is safe to show to the client."""


class ImageTooLarge(MediaRefused):
    """A picture (or video frame) over MAX_IMAGE_PIXELS."""

    code = "image_too_large"

    def __init__(self, message: str, width: int = 0, height: int = 0) -> None:
        super().__init__(message)
        self.width, self.height = width, height


def bounded(argv: list[str]) -> list[str]:
    """`argv` run with at most MEDIA_MAX_MEMORY_BYTES of address space."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:  # util-linux is part of every Debian; without it the timeouts still hold
        return argv
    return [prlimit, f"--as={MEDIA_MAX_MEMORY_BYTES}", "--", *argv]


def media_env() -> dict[str, str]:
    return {**os.environ, "MALLOC_ARENA_MAX": "2"}


def picture_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a picture's header, before any decoder runs; None for anything that is
    not a picture PIL knows. ImageTooLarge past MAX_IMAGE_PIXELS: ffprobe decodes a PNG to describe
    it (802 MB and 2.1 s for a 746 KB 16000x16000 one) and reported 20000x20000 as 0x0."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            with Image.open(path, formats=PICTURE_FORMATS) as header:
                width, height = header.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the picture is too large ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    check_picture(width, height)
    return width, height


def check_picture(width: int, height: int) -> None:
    if width <= 0 or height <= 0:  # nothing to bound it by: never handed to a decoder
        raise MediaRefused("the picture's size cannot be measured")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"the picture is {width}x{height} pixels; the limit is "
                            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels", width, height)


def run_ffmpeg(args: list[str], *, binary: str = "ffmpeg", input_bytes: bytes | None = None,
               timeout: float = 600.0) -> bytes:
    argv = [binary, "-hide_banner", "-nostdin", *args] if binary == "ffmpeg" else [binary, *args]
    # Never the API's stdin: under supervisord that is the listening socket.
    stdin = None if input_bytes is not None else subprocess.DEVNULL
    try:
        proc = subprocess.run(bounded(argv), input=input_bytes, stdin=stdin, capture_output=True, timeout=timeout,
                              check=False, env=media_env())
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{binary} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise MediaError(f"{binary} failed: {' | '.join(tail) or 'exit ' + str(proc.returncode)}")
    return proc.stdout


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    has_audio: bool
    has_video: bool
    format_name: str
    width: int = 0  # of the first video stream (not cover art); 0 without one
    height: int = 0

    @property
    def demuxer(self) -> str:
        """The name that forces this demuxer with `-f`."""
        return self.format_name.split(",")[0]

    @property
    def still_image(self) -> bool:
        return self.format_name in STILL_IMAGE_FORMATS


def _url(path: Path) -> str:
    # The explicit protocol keeps any file name from being parsed as another protocol or option.
    return f"file:{Path(path).resolve()}"


def _open_args(demuxer: str | None = None) -> list[str]:
    """Input options for a client file: the local file protocol only, accepted demuxers only, and
    the demuxer probe() found when known, so a later call cannot be steered to another one."""
    args = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(ACCEPTED_FORMATS)]
    return [*args, "-f", demuxer] if demuxer else args


def _ffprobe_json(path: Path) -> dict:
    try:
        out = run_ffmpeg(["-v", "error", *_open_args(), "-print_format", "json", "-show_format", "-show_streams",
                          _url(path)], binary="ffprobe", timeout=60)
    except MediaError as exc:
        refused = _NOT_ON_WHITELIST.search(str(exc))
        if refused:
            raise MediaRefused(f"container format {refused.group(1)!r} is not accepted; accepted: "
                               f"{', '.join(ACCEPTED_FORMATS)}") from exc
        raise
    return json.loads(out or b"{}")


def _declared_duration(fmt: dict, streams: list[dict]) -> float:
    durations = [float(s["duration"]) for s in streams if s.get("duration") not in (None, "N/A")]
    if fmt.get("duration") not in (None, "N/A"):
        durations.append(float(fmt["duration"]))
    return max(durations) if durations else 0.0


def _measured_duration(path: Path, demuxer: str, max_packets: int = 2_000_000) -> float:
    """End of the last packet, read without decoding: streamed WebM (browser recordings) and FLAC
    declare no duration but are fine. Streams line by line so a file of tiny packets costs no memory."""
    argv = ["ffprobe", "-v", "error", *_open_args(demuxer), "-show_entries", "packet=pts_time,duration_time",
            "-of", "csv=p=0", _url(path)]
    proc = subprocess.Popen(bounded(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=media_env())
    expired = threading.Event()
    timer = threading.Timer(60, lambda: (expired.set(), proc.kill()))
    timer.start()
    end = 0.0
    try:
        for count, line in enumerate(proc.stdout):
            if count >= max_packets:
                return 0.0
            fields = line.decode("ascii", "replace").strip().split(",")
            try:
                end = max(end, float(fields[0]) + (float(fields[1]) if fields[1:] and fields[1] else 0.0))
            except ValueError:
                continue  # a packet without timestamps says nothing about the length
    finally:
        proc.kill()
        proc.stdout.close()
        proc.wait()
        timer.cancel()
    return 0.0 if expired.is_set() else end  # a partial count would understate the length


def probe(path: Path) -> MediaInfo:
    """What a client file holds, after refusing what must not be opened or cannot be bounded:
    containers outside ACCEPTED_FORMATS, (except still pictures) media of unknown length, which
    passed every duration limit as 0 s, and pictures too large or of unmeasurable size, the
    picture's header read first (ImageTooLarge)."""
    picture_size(path)
    data = _ffprobe_json(path)
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    name = str(fmt.get("format_name", ""))
    demuxer = name.split(",")[0]
    if demuxer not in ACCEPTED_FORMATS:  # ffprobe's whitelist refuses them first; kept as the contract
        raise MediaRefused(f"container format {name!r} is not accepted")
    video = [s for s in streams if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic") != 1]
    duration = _declared_duration(fmt, streams)
    if duration <= 0 and name not in STILL_IMAGE_FORMATS:
        duration = _measured_duration(path, demuxer)
        if duration <= 0:
            raise MediaRefused("unknown duration")
    if video:  # frames whose size ffprobe could not tell (0x0) are never decoded
        check_picture(int(video[0].get("width") or 0), int(video[0].get("height") or 0))
    return MediaInfo(
        duration_s=duration,
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        has_video=bool(video),
        format_name=name,
        width=int(video[0].get("width") or 0) if video else 0,
        height=int(video[0].get("height") or 0) if video else 0,
    )


def decode_limit_s(info: MediaInfo) -> float:
    """How far a client file is decoded: a little past the length its container declared (and the
    API checked), so a file that lies about its length cannot fill memory or run for hours."""
    return min(MAX_DECODE_S, info.duration_s * 1.25 + 5.0)


def _read_capped(argv: list[str], max_bytes: int, timeout: float) -> bytes:
    """stdout of `argv`, stopped after `max_bytes` or `timeout` s (stderr kept for the error)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(bounded(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=media_env())
        expired = threading.Event()
        timer = threading.Timer(timeout, lambda: (expired.set(), proc.kill()))
        timer.start()
        try:
            out = proc.stdout.read(max_bytes)
            full = len(out) >= max_bytes
            if full:
                proc.kill()
        finally:
            proc.stdout.close()
            code = proc.wait()
            timer.cancel()
        if expired.is_set():
            raise MediaError(f"{argv[0]} timed out after {timeout:.0f} s")
        if code != 0 and not full:
            err.seek(0)
            tail = err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            raise MediaError(f"{argv[0]} failed: {' | '.join(tail) or 'exit ' + str(code)}")
    return out


def decode_audio(path: Path, sample_rate: int = 16000, max_seconds: float | None = None,
                 timeout: float = 300.0) -> np.ndarray:
    """Any accepted container with an audio track -> mono float32 in [-1, 1] at `sample_rate`.

    With `max_seconds`, longer audio is a MediaError; without, decoding stops at decode_limit_s()."""
    info = probe(path)
    if not info.has_audio:
        raise MediaError("the file has no audio track")
    limit = min(MAX_DECODE_S, max_seconds) if max_seconds is not None else decode_limit_s(info)
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *_open_args(info.demuxer), "-i", _url(path),
            "-vn", "-ac", "1", "-ar", str(sample_rate), "-t", f"{limit + 0.5:.3f}",
            "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    # The byte cap holds even when timestamps are broken and `-t` never triggers.
    raw = _read_capped(argv, 4 * int((limit + 1.0) * sample_rate), timeout)
    audio = np.frombuffer(raw[: len(raw) // 4 * 4], dtype=np.float32)
    if audio.size == 0:
        raise MediaError("no audio samples could be decoded")
    if audio.size > limit * sample_rate:
        if max_seconds is not None:
            raise MediaError(f"audio longer than {max_seconds:.0f} s")
        log.warning("%s declares %.1f s but holds more; decoded up to %.1f s", path.name, info.duration_s, limit)
        audio = audio[: int(limit * sample_rate)]
    return audio


def _filtered(audio: np.ndarray, chain: str, sample_rate: int) -> np.ndarray:
    """Mono float32 `audio` through the ffmpeg audio filter `chain` (raw samples in and out)."""
    pcm = np.ascontiguousarray(audio, "<f4").tobytes()
    raw = run_ffmpeg(["-v", "error", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
                      "-af", chain, "-f", "f32le", "pipe:1"], input_bytes=pcm)
    return np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4").astype(np.float32)


def change_tempo(audio: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 `audio` spoken `factor` times as fast at the same pitch (ffmpeg's atempo, whose
    one pass covers 0.5-2)."""
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"tempo factor {factor} outside 0.5-2")
    out = _filtered(audio, f"atempo={factor:.4f}", sample_rate)
    # atempo's output runs 25-40 ms early (measured at 0.9 and 1.1): a caller pairing the copy's
    # sound with the original's frames needs it where the original puts it.
    lead = _lead(np.asarray(audio, np.float32), out, factor, sample_rate)
    if lead > 0:
        out = np.concatenate([np.zeros(lead, np.float32), out])
    return out[: int(round(len(audio) / factor))]


def change_pitch(audio: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 `audio` in a voice `factor` times as high (pitch and formants: another speaker's
    register) at the same pace and length: resampled, then its tempo restored with atempo."""
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"pitch factor {factor} outside 0.5-2")
    chain = f"asetrate={int(round(sample_rate * factor))},aresample={sample_rate},atempo={1.0 / factor:.4f}"
    out = _filtered(audio, chain, sample_rate)
    lead = _lead(np.asarray(audio, np.float32), out, 1.0, sample_rate)
    out = np.concatenate([np.zeros(lead, np.float32), out, np.zeros(len(audio), np.float32)])
    return out[: len(audio)]


def _lead(audio: np.ndarray, copy: np.ndarray, factor: float, sample_rate: int, max_s: float = 0.1) -> int:
    """Samples by which `copy`'s loudness envelope runs ahead of `audio`'s own, at 1 ms."""
    hop = sample_rate // 1000

    def env(x: np.ndarray) -> np.ndarray:
        return np.abs(x[: len(x) // hop * hop]).reshape(-1, hop).mean(axis=1)

    want, got = env(audio), env(copy)
    n = min(len(got), int(len(want) / factor))
    if n < 100:
        return 0
    want = want[np.minimum((np.arange(n) * factor).astype(int), len(want) - 1)]
    want, got = want - want.mean(), got[:n] - got[:n].mean()
    lags = np.arange(int(max_s * 1000) + 1)
    score = [float(np.dot(want[k:], got[: n - k])) for k in lags]
    return int(lags[int(np.argmax(score))]) * hop if max(score) > 0 else 0


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV, written to a temp name then renamed so readers never see half a file."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    # A temp name of this writer's own: two writers of the same file (TTS workers making one cache
    # entry) must not write into each other's; the last rename wins, whole.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    tmp.replace(path)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        frames = wav.readframes(wav.getnframes())
    if width != 2:
        raise MediaError("only 16-bit WAV is read directly")
    audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate


def decode_own_speech(path: Path, sample_rate: int) -> np.ndarray:
    """decode_audio for a 16-bit PCM WAV the service wrote itself (its TTS): read in-process, without
    decode_audio's two processes (ffprobe, ffmpeg), which cost ~0.3-0.6 s each on a loaded machine
    before a live room can start speaking. Anything else goes through decode_audio."""
    try:
        audio, rate = read_wav(path)
    except (wave.Error, EOFError, MediaError):
        return decode_audio(path, sample_rate)
    audio = audio[: int(MAX_DECODE_S * rate)]
    if audio.size == 0:
        raise MediaError("no audio samples could be decoded")
    if rate != sample_rate:
        from scipy.signal import resample_poly  # here: importing scipy.signal costs the API 0.7 s at start

        g = np.gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def video_size(path: Path) -> tuple[int, int]:
    info = probe(path)
    if not info.width or not info.height:
        raise MediaError("no video stream")
    return info.width, info.height


def iter_video_frames(path: Path, width: int, height: int, fps: int = 25):
    """Decode a video as BGR frames of the given size at `fps`, one at a time (bounded memory),
    for no longer than decode_limit_s(); a still picture gives one frame."""
    info = probe(path)
    if info.width * info.height > MAX_IMAGE_PIXELS:
        raise MediaRefused(f"frames of {info.width}x{info.height} exceed {MAX_IMAGE_PIXELS} pixels")
    bound = ["-frames:v", "1"] if info.still_image else ["-t", f"{decode_limit_s(info):.3f}"]
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *_open_args(info.demuxer), "-i", _url(path), "-an",
            "-vf", f"fps={fps},scale={width}:{height}:flags=area", *bound, "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    size = width * height * 3
    proc = subprocess.Popen(bounded(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=media_env())
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise MediaError(f"ffmpeg failed: {' | '.join(err.splitlines()[-3:]) or 'exit ' + str(code)}")


class VideoWriter:
    """Raw BGR frames in, an MP4 (H.264 yuv420p + AAC, +faststart) out, through one ffmpeg process."""

    def __init__(self, path: Path, width: int, height: int, fps: int = 25, audio: Path | None = None,
                 preset: str = "veryfast", crf: int = 17) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
                "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio is not None:
            # The client's audio is muxed as is: same input rules and length bound as its decode.
            info = probe(audio)
            argv += [*_open_args(info.demuxer), "-t", f"{decode_limit_s(info):.3f}", "-i", _url(audio)]
        argv += ["-map", "0:v:0"] + (["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-ar", "44100"] if audio else [])
        argv += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                 "-g", str(2 * fps), "-movflags", "+faststart", "-f", "mp4", str(self._tmp)]
        self._proc = subprocess.Popen(bounded(argv), stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=media_env())
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError as exc:
            raise MediaError(self._error()) from exc
        self.frames += 1

    def _error(self) -> str:
        self._proc.wait()
        tail = self._proc.stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        return f"ffmpeg failed: {' | '.join(tail) or 'exit ' + str(self._proc.returncode)}"

    def close(self) -> Path:
        self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise MediaError(self._error())
        self._proc.stderr.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.unlink(missing_ok=True)
