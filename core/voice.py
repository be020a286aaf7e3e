"""Live voice in: Silero VAD endpointing and recognition of each utterance while it is spoken.

The audio socket (api/routers/voice.py) feeds PCM to an :class:`Endpointer`, which runs Silero VAD
(the ONNX model shipped by the `silero-vad` package, run with onnxruntime: no torch, no download)
on 32 ms windows and reports where speech starts, pauses, resumes and ends (after
``voice_end_silence_ms`` of silence). The utterance stays in memory only, never on disk.

Recognition (faster-whisper, the ASR side's bundled model) runs in the API process, on one thread
per process (:func:`recognise`): a spoken turn needs its text within ~0.3 s of the endpoint, which an
RQ round trip to an `asr` worker busy with a minute-long file would not give, and the audio would have
to cross Redis. The encoder sees the utterance plus 3 s (at least 10 s), not a 30 s window (models.asr.transcribe_utterance:
0.1-0.3 s for 0.5-5 s of speech here instead of 2-5 s under load). The final text is not begun at the
endpoint but as soon as the speaker pauses (``voice_speculate_ms``): if the pause becomes the endpoint,
that text is the final one; if speech resumes, it is dropped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.settings import Settings

log = logging.getLogger(__name__)

RATE = 16000
WINDOW = 512  # samples per VAD window at 16 kHz (32 ms): what the Silero model takes
CONTEXT = 64  # samples of the previous window the model sees before each one
TAIL_S = 0.2  # silence kept after the last voiced window for recognition (word endings)


def vad_model_path() -> Path:
    """The ONNX model inside the installed `silero-vad` package (found without importing it: its
    __init__ imports torch, which the API process does not need)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"


@lru_cache(maxsize=1)
def _vad_session():
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = opts.intra_op_num_threads = 1  # 0.1 ms a window: threads would cost more
    return onnxruntime.InferenceSession(str(vad_model_path()), sess_options=opts,
                                        providers=["CPUExecutionProvider"])


class Vad:
    """Silero VAD's recurrent state for one stream; one shared (thread-safe) ONNX session."""

    def __init__(self) -> None:
        self.session = _vad_session()
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
        self.sr = np.array(RATE, np.int64)

    def prob(self, window: np.ndarray) -> float:
        x = np.concatenate([self.context, window])[None, :]
        out, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.sr})
        self.context = window[-CONTEXT:]
        return float(out[0][0])


@dataclass
class Endpointer:
    """Cuts a stream of PCM into utterances. push() returns events, each (kind, fields):
    speech_start, pause (silence began after speech: recognise now), resume (speech again within the
    same utterance), speech_end (the endpoint: ``voice_end_silence_ms`` of silence, `end`, or the
    longest utterance reached)."""

    settings: Settings
    vad: Vad = field(default_factory=Vad)
    samples: int = 0  # processed since the stream began
    in_speech: bool = False
    paused: bool = False
    voiced_run: int = 0  # consecutive voiced windows
    silent_run: int = 0  # consecutive silent windows inside an utterance
    voiced_end: int = 0  # utterance samples up to the end of its last voiced window
    last_voiced_at: int = 0  # stream sample where the last voiced window ended
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    utterance: list = field(default_factory=list)
    preroll: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        s = self.settings
        self.start_windows = max(1, round(s.voice_min_speech_ms / 32))
        self.end_windows = max(1, round(s.voice_end_silence_ms / 32))
        self.pause_windows = min(self.end_windows, max(1, round(s.voice_speculate_ms / 32)))
        self.preroll = deque(maxlen=max(self.start_windows, round(s.voice_preroll_ms / 32)))
        self.max_samples = int(s.voice_max_utterance_s * RATE)
        self.on, self.off = s.voice_speech_threshold, max(0.05, s.voice_speech_threshold - 0.15)

    def push(self, pcm: np.ndarray) -> list[tuple[str, dict]]:
        audio = np.concatenate([self.pending, pcm]) if self.pending.size else pcm
        events: list[tuple[str, dict]] = []
        n = audio.size - audio.size % WINDOW
        for i in range(0, n, WINDOW):
            events += self._window(audio[i:i + WINDOW])
        self.pending = audio[n:].copy()
        return events

    def _window(self, window: np.ndarray) -> list[tuple[str, dict]]:
        p = self.vad.prob(window)
        self.samples += WINDOW
        if not self.in_speech:
            self.preroll.append(window)
            self.voiced_run = self.voiced_run + 1 if p >= self.on else 0
            if self.voiced_run < self.start_windows:
                return []
            self.in_speech, self.paused, self.silent_run = True, False, 0
            self.utterance = list(self.preroll)
            self.preroll.clear()
            self._voiced()
            return [("speech_start", {"at_s": self._t(self.samples - self.voiced_run * WINDOW)})]
        self.utterance.append(window)
        voiced = p >= (self.off if not self.paused and self.silent_run == 0 else self.on)
        if voiced:
            self.silent_run = 0
            self._voiced()
            if self.paused:
                self.paused = False
                return [("resume", {"at_s": self._t(self.samples)})]
        else:
            self.silent_run += 1
        if self.silent_run >= self.end_windows or self.utterance_samples >= self.max_samples:
            return [self.end("silence" if self.silent_run >= self.end_windows else "too_long")]
        if not self.paused and self.silent_run >= self.pause_windows:
            self.paused = True
            return [("pause", {"at_s": self._t(self.samples)})]
        return []

    def _voiced(self) -> None:
        self.voiced_end = self.utterance_samples
        self.last_voiced_at = self.samples

    @property
    def utterance_samples(self) -> int:
        return len(self.utterance) * WINDOW

    def speech(self) -> np.ndarray:
        """The utterance up to its last voiced window, plus a short tail: what is recognised. Taken as
        silence begins (the decode that may become the final), the tail not heard yet is silence: the
        same length of audio as at the endpoint (Whisper's encoder pads with silence anyway)."""
        audio = np.concatenate(self.utterance) if self.utterance else np.zeros(0, np.float32)
        end = self.voiced_end + int(TAIL_S * RATE)
        if audio.size < end:
            audio = np.concatenate([audio, np.zeros(end - audio.size, np.float32)])
        return audio[:end]

    def end(self, reason: str) -> tuple[str, dict]:
        """The endpoint (also forced by the client's `end`); the utterance is kept for speech()."""
        self.in_speech = self.paused = False
        self.voiced_run = self.silent_run = 0
        return ("speech_end", {"reason": reason, "at_s": self._t(self.samples),
                               "last_voiced_s": self._t(self.last_voiced_at),
                               "duration_s": round(self.voiced_end / RATE, 3)})

    def reset_utterance(self) -> None:
        self.utterance, self.voiced_end = [], 0

    @staticmethod
    def _t(samples: int) -> float:
        return round(samples / RATE, 3)


# ---- recognition ----

# Finals (and the early decode at a pause) and partials each have a thread of their own, on one model
# with two CTranslate2 workers: a final never waits for a partial begun just before the speaker stopped
# (under load a partial took up to 1.4 s, and the final waited behind it).
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voice-asr")
_PARTIALS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voice-asr-partial")


@dataclass(frozen=True)
class Recognised:
    text: str
    language: str
    audio_s: float
    seconds: float  # time the decode took (after it left the queue)


def _model(settings: Settings):
    from models.asr import load_model

    return load_model(settings.models_dir, settings.asr_model, settings.voice_asr_threads, 2)


def _decode(settings: Settings, audio: np.ndarray, language: str, context: str | None = None,
            quick: bool = False) -> Recognised:
    from models.asr import transcribe_utterance

    started = time.monotonic()
    text = transcribe_utterance(_model(settings), audio, language, settings.voice_beam_size, context, quick)
    return Recognised(text=text, language=language, audio_s=round(audio.size / RATE, 3),
                      seconds=round(time.monotonic() - started, 3))


def recognise(settings: Settings, audio: np.ndarray, language: str, context: str | None = None,
              partial: bool = False, quick: bool = False) -> asyncio.Future:
    """Recognise an utterance on the process's recognition thread (`partial`: the partials' own); an
    awaitable future. `context`: what Whisper is told was said before (recognition_context); `quick`:
    a text only shown (models.asr.transcribe_utterance)."""
    executor = _PARTIALS if partial else _EXECUTOR
    source = executor.submit(_decode, settings, audio, language, context, quick)
    future = asyncio.wrap_future(source)
    future.source = source  # for unqueue(): cancelling the awaitable alone would not stop the thread
    return future


def unqueue(future: asyncio.Future) -> bool:
    """Take a decode off its thread's queue if it has not begun (one begun runs to its end). True if
    it was taken off (the awaitable is then cancelled too)."""
    source = getattr(future, "source", None)
    return source is not None and source.cancel()


CONTEXT_CHARS = 200  # of the room's context given to Whisper (its newest end is kept: the last reply)


def recognition_context(redis, settings: Settings, room, language: str) -> str:
    """The room's context as Whisper's previous text: the position its interview is for, the names in
    its material (faq rooms), and what the room said last (the question the speaker answers), newest
    last. Measured by bench.voice_context; used only with ``voice_context_bias`` on."""
    from core.conversations.faq import text_in
    from core.conversations.store import ConversationStore, MaterialStore

    parts = [room.job] if room.job else []
    if room.responder == "faq":
        material = MaterialStore(redis).get(room.id) or {}
        parts += [name for p in (material.get("products") or [])[:20] if (name := text_in(p.get("name"), language))]
    said = [m for m in ConversationStore(redis, settings).messages(room.id, 6) if m["role"] == "assistant" and m["text"]]
    if said:
        parts.append(said[-1]["text"])
    sep = "。" if language == "zh" else ". "
    return sep.join(p.strip() for p in parts if p and p.strip())[-CONTEXT_CHARS:]


def warm(settings: Settings) -> asyncio.Future:
    """Load the recognition model (and the VAD) before the first utterance needs them."""
    def load():
        _vad_session()
        _model(settings)
    return asyncio.get_running_loop().run_in_executor(_EXECUTOR, load)
