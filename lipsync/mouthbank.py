"""A presenter's own mouth, learned from talking footage: appearances and audio-to-shape mapping.

Stored with the avatar as ``mouth/bank.npz`` (arrays only, no pickle) and ``mouth/enrollment.json``:

    ref        [10,2]     canonical positions of the STABLE landmarks (the frame of reference)
    patches    JPEG bytes of each exemplar's lower face in the canonical frame (offsets alongside)
    shapes     [K,47,2]   each exemplar's lips + chin (SHAPE) in the canonical frame
    poses      [K,6,2]    each exemplar's POSE points (yaw/pitch cue) in the canonical frame
    mask       [H,W]      feathered blend mask of the lower face in the canonical frame
    pca_*      shape model: mean [94], components [C,94], coefficient range [2,C]
    rest, open [47,2]     the presenter's closed mouth at rest and a typical open one
    mapping    "mlp": mlp_* maps log-mel context to the PCA coefficients with a network; "mel-ridge":
               ridge_* does the same (samples under 2 s of face frames, and v8 banks enrolled before
               the network took samples under 20 s); "ridge" (banks before v6):
               ridge_* maps MFCC context to the coefficients the loudness prior misses
    enc_*      (v7) a ridge from the Whisper encoder's context (lipsync.phonetic) to the same
               coefficients; speech without phone times averages it with the mapping above
    ph_*       (v8, English samples) a ridge from force-aligned phones (lipsync.align) to the same
               coefficients; English speech without the synthesis' phone times averages all three
    speech_prior_lag, sample_frames
               (v9) how the shipped speech prior (lipsync.prior) joins that average for this
               presenter: moved by this many frames to their sample's timing, at the weight its
               sample's frames with a face give (speech_prior_weight)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import cv2
import numpy as np

from lipsync.canonical import CORNER_L, CORNER_R, LOWER_INNER, SHAPE, UPPER_INNER, inner_opening
from lipsync.identity import PRESENTER_FILE, load_presenter
from lipsync.align import PhoneFeatureOptions, align_speech, phone_features
from lipsync.features import FeatureOptions, MelOptions, Mlp, Ridge, frame_features, mel_features
from lipsync.mouth import MouthTrack
from lipsync.phonetic import EncoderOptions, encoder_features
from lipsync.prior import load_prior

log = logging.getLogger(__name__)

# v9: the speech prior's lag (v8: the phone mapping; v7: the encoder mapping; v6: short samples map log-mels)
BANK_VERSION = "mouthbank-v9"
BANK_DIR = "mouth"


ARTICULATION_GAIN_MAX = 3.0  # the most a prediction's spread is widened (see MouthBank._articulate)
# The shipped speech prior's weight in the average of the mappings (each of the presenter's own has 1)
# for samples of up to SPEECH_PRIOR_FULL_FRAMES frames with a face; a longer sample teaches its own
# mappings more, and the weight falls in proportion (speech_prior_weight). Chosen on the development
# clips (lipsync.prior): on the 44 windows of 2.8-14 s, 2 against 1 and 3 (3: LMD ratio no longer
# better at 14 s); on pd-tedlieu-wda's 33 s sample (824 frames), opening r +0.011 / +0.013 / +0.010
# and LMD ratio +0.010 / -0.002 / -0.005 at weights 2 / 1 / 0.5.
SPEECH_PRIOR_WEIGHT = 2.0
SPEECH_PRIOR_FULL_FRAMES = 350


def speech_prior_weight(frames_with_face: int) -> float:
    """The speech prior's weight for a sample with this many frames with a face (0: unknown, full)."""
    return SPEECH_PRIOR_WEIGHT * min(1.0, SPEECH_PRIOR_FULL_FRAMES / max(1, frames_with_face))

SHUT_GAP = 0.02  # the inner lips' gap of a shut mouth, as a share of its width
MASK_SCALE = 0.5  # of the canonical frame, where the renderer draws each frame's blend mask
PAUSE_FRAMES = 15  # 0.6 s: shorter gaps keep the mouth's own half-open shapes, as speakers do. On the
# development clips the gate at 0.4 s lowered the predicted opening's r with the real one (pd-tedlieu-wda
# 0.565 without a gate, 0.475 at 0.4 s, 0.549 at 0.6 s; pd-reagan-farewell 0.172, 0.168, 0.172).


def pause_gate(voiced: np.ndarray, min_frames: int) -> np.ndarray:
    """1 while speaking, 0 inside pauses of at least `min_frames`; the lips leave rest a frame
    before the sound and ease in and out over a few frames."""
    gate = np.ones(len(voiced), np.float32)
    start = None
    for i, v in enumerate(list(voiced) + [True]):
        if not v and start is None:
            start = i
        elif v and start is not None:
            if i - start >= min_frames:
                gate[start:i] = 0.0
            start = None
    gate = np.maximum(gate, np.concatenate([gate[1:], [0.0]]))
    return np.convolve(np.pad(gate, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid").astype(np.float32)


def _uncrossed(shapes: np.ndarray) -> np.ndarray:
    """Each lower inner-lip point at least SHUT_GAP of the mouth's width below the upper one facing
    it, the pair moved apart evenly. Coefficients predicted and clipped one by one can cross the
    lips (4-19% of frames on real-talk-5's enrollment, no frame of its real footage): the renderer's
    warp then folds the lower lip into the mouth and smears the chin."""
    width = np.linalg.norm(shapes[:, CORNER_L] - shapes[:, CORNER_R], axis=-1)
    gap = shapes[:, LOWER_INNER, 1] - shapes[:, UPPER_INNER, 1]
    short = np.maximum(0.0, SHUT_GAP * width[:, None] - gap)
    if not short.any():
        return shapes
    shapes = shapes.copy()
    shapes[:, UPPER_INNER, 1] -= 0.5 * short
    shapes[:, LOWER_INNER, 1] += 0.5 * short
    return shapes


@dataclass
class MouthBank:
    ref: np.ndarray
    patches: np.ndarray  # [K,H,W,3] uint8, decoded
    shapes: np.ndarray
    poses: np.ndarray
    mask: np.ndarray
    pca_mean: np.ndarray
    pca_comp: np.ndarray
    pca_range: np.ndarray
    pca_std: np.ndarray  # [C] spread of each coefficient while the presenter speaks
    rest: np.ndarray
    open: np.ndarray
    learned: Ridge | Mlp
    features: FeatureOptions
    mapping: str = "mel-ridge"  # what `learned` reads and predicts (see the module's docstring)
    mel: MelOptions = MelOptions()
    prior_gain: float = 0.7
    prior_lead: int = 1  # frames the lips lead the sound by
    # Who the enrollment sample showed (lipsync/identity.py), kept in presenter.json beside the bank;
    # None for banks enrolled before it was kept.
    presenter: object = None
    speech: Ridge | None = None  # the encoder mapping (enc_*); None in banks before v7
    encoder: EncoderOptions = EncoderOptions()
    phones: Ridge | None = None  # the phone mapping (ph_*); None for other languages and banks before v8
    phone_features: PhoneFeatureOptions = PhoneFeatureOptions()
    # Frames the shipped speech prior (lipsync.prior) is moved by to agree with this presenter's own
    # sample (v9); banks before v9 use it unmoved until upkeep re-enrolls them.
    speech_prior_lag: int = 0
    sample_frames: int = 0  # (v9) the sample's frames with a face; 0: unknown (the prior's full weight)

    @cached_property
    def small_mask(self) -> np.ndarray:
        """The mask at MASK_SCALE, where the renderer draws each frame's blend mask."""
        size = (round(self.mask.shape[1] * MASK_SCALE), round(self.mask.shape[0] * MASK_SCALE))
        return cv2.resize(self.mask, size, interpolation=cv2.INTER_AREA)

    @cached_property
    def iod(self) -> float:
        """The inter-ocular distance in the canonical frame (outer eye corners, the first and fourth
        stable points)."""
        return float(np.linalg.norm(self.ref[0] - self.ref[3]))

    @cached_property
    def openings(self) -> np.ndarray:
        """[K] each appearance's inner-lip opening (canonical units)."""
        return inner_opening(self.shapes)

    @property
    def size(self) -> tuple[int, int]:
        return self.mask.shape[1], self.mask.shape[0]

    def prior(self, track: MouthTrack) -> np.ndarray:
        """The speaker-independent articulation (lipsync.mouth: loudness and the voice's
        1-3 kHz share) in the presenter's own shapes: from rest towards their open mouth, leading
        the sound slightly. Short samples cannot teach much more; the prior keeps the mouth
        speaking where the learned part has too little to go on."""
        n = len(track.open)
        env = track.open[np.clip(np.arange(n) + self.prior_lead, 0, n - 1)]
        return self.rest + self.prior_gain * env[:, None, None] * (self.open - self.rest)

    def predict_shapes(self, audio_16k: np.ndarray, track: MouthTrack) -> np.ndarray:
        """[n,47,2] canonical lip + chin positions for each video frame of the speech."""
        n_frames = len(track.open)
        if self.mapping in ("mlp", "mel-ridge"):
            # The log-mel context predicts the whole shape; the loudness prior would only blur it. On
            # the development clips (enrolled on 3 s windows of pd-tedlieu-wda / pd-reagan-farewell, or
            # on reagan's first 14 s) a log-mel ridge gave opening r 0.27 / 0.31 / 0.41 where the
            # prior with an MFCC ridge gave 0.21 / 0.06 / 0.17.
            coeffs = self.learned.predict(mel_features(audio_16k, n_frames, self.mel))
            if track.vowels is None:
                coeffs = self._with_speech_mappings(coeffs, audio_16k, n_frames)
            coeffs = self._articulate(coeffs, track.voiced)
            shapes = (self.pca_mean + coeffs @ self.pca_comp).reshape(n_frames, len(SHAPE), 2)
        else:  # a bank enrolled before v6, until upkeep re-enrolls it
            learned = self.learned.predict(frame_features(audio_16k, n_frames, self.features)) @ self.pca_comp
            shapes = self.prior(track) + learned.reshape(n_frames, len(SHAPE), 2)
        if n_frames >= 3:
            padded = np.concatenate([shapes[:1], shapes, shapes[-1:]])
            shapes = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
        speaking = pause_gate(track.voiced, PAUSE_FRAMES)
        shapes = self.rest + speaking[:, None, None] * (shapes - self.rest)
        if track.vowels is not None:  # after the smoothing, which would halve a vowel of one frame
            shapes = self._parted(shapes, track.vowels)
        if track.closure is not None:
            shapes = shapes + track.closure[:, None, None] * (self.shut - shapes)
        return _uncrossed(shapes).astype(np.float32)

    def _with_speech_mappings(self, coeffs: np.ndarray, audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
        """The log-mel mapping's `coeffs` averaged with the encoder's, for English speech the aligned
        phones', and the shipped speech prior's (lipsync.prior), for speech without the synthesis'
        phone times. Chosen on pd-reagan-farewell and
        pd-tedlieu-wda, predicted shapes against the real ones (enrolled on 55%, tested on the rest;
        and on six 2.8 s windows): opening r 0.459 -> 0.550 and 0.639 -> 0.659 with the phones (six
        windows, mean with the two: 0.380 -> 0.421), lip-landmark distance to the rotated speech's
        0.931 -> 0.935, 0.826 -> 0.798 (mean 0.934 -> 0.922). An equal average: the phone mapping
        alone, or at half the weight, did no better across the windows. Rendered (bench.redub):
        opening r 0.411 -> 0.421 and 0.602 -> 0.618, LMD ratio 0.973 -> 0.961 and 0.849 -> 0.837.
        The shipped speech prior joins them at the weight the sample's length gives
        (speech_prior_weight), moved by the presenter's lag (lipsync.prior)."""
        prior = load_prior()
        enc = encoder_features(audio_16k, n_frames, self.encoder)
        phones = align_speech(audio_16k)
        mappings, weights = [coeffs], [1.0]
        if self.speech is not None:
            mappings.append(self.speech.predict(enc))
            weights.append(1.0)
        if phones and self.phones is not None:
            mappings.append(self.phones.predict(phone_features(phones, n_frames, self.phone_features)))
            weights.append(1.0)
        if prior.encoder_opts != self.encoder:
            enc = encoder_features(audio_16k, n_frames, prior.encoder_opts)
        phone_x = phone_features(phones, n_frames, prior.phone_opts) if phones else None
        mappings.append(prior.coefficients(enc, phone_x, self.iod, self.pca_comp, self.speech_prior_lag))
        weights.append(speech_prior_weight(self.sample_frames))
        return np.average(mappings, axis=0, weights=weights)

    def _articulate(self, coeffs: np.ndarray, voiced: np.ndarray) -> np.ndarray:
        """The mapping's predictions regress to the mean (a murmuring mouth): give each shape
        coefficient the spread the presenter's own speech has, around the utterance's own mean;
        then keep it inside the range the presenter's own mouth showed. A ridge fitted on a few
        seconds, widened, could otherwise draw a mouth no one makes (real-talk-5: the lips pressed
        up under the nose above a long chin, two frames of a reported run)."""
        if voiced.sum() >= 10:
            centre = coeffs[voiced].mean(axis=0)
            gain = np.clip(self.pca_std / (coeffs[voiced].std(axis=0) + 1e-6), 1.0, ARTICULATION_GAIN_MAX)
            coeffs = centre + gain * (coeffs - centre)
        return np.clip(coeffs, self.pca_range[0], self.pca_range[1])

    def _parted(self, shapes: np.ndarray, vowels: np.ndarray) -> np.ndarray:
        """Lips parted at least as far as each frame's vowel asks (a share of the presenter's own
        open mouth), moving the whole shape, jaw included, towards that open mouth. A mapping fitted
        on a few seconds of someone else's voice can leave vowels of synthesised speech nearly shut;
        where it already opens wider, it is kept."""
        gap = inner_opening(shapes)
        widest = float(inner_opening(self.open))
        alpha = np.clip((vowels * widest - gap) / np.maximum(widest - gap, 1e-6), 0.0, 1.0)
        return shapes + alpha[:, None, None] * (self.open - shapes)

    @property
    def shut(self) -> np.ndarray:
        """The rest shape with the inner lips meeting (some people rest with their lips apart):
        what m, b and p look like."""
        shut = self.rest.copy()
        middle = 0.5 * (shut[UPPER_INNER] + shut[LOWER_INNER])
        # A hair apart, not on top of each other: two control points in one place with different
        # displacements make the renderer's thin-plate warp singular, and it tore the mouth corners
        # and threw lip texture over the chin on every m, b and p (real-talk-5, English speech).
        half = (SHUT_GAP / 2) * np.linalg.norm(shut[CORNER_L] - shut[CORNER_R])
        down = np.array([0.0, 1.0], np.float32)
        shut[UPPER_INNER], shut[LOWER_INNER] = middle - half * down, middle + half * down
        return shut

    def save(self, directory: Path, meta: dict) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        blobs = [cv2.imencode(".jpg", p, [int(cv2.IMWRITE_JPEG_QUALITY), 94])[1].ravel() for p in self.patches]
        offsets = np.cumsum([0] + [b.size for b in blobs]).astype(np.int64)
        arrays = {
            "ref": self.ref, "jpeg": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
            "jpeg_offsets": offsets, "shapes": self.shapes, "poses": self.poses,
            "mask": self.mask.astype(np.float16), "pca_mean": self.pca_mean, "pca_comp": self.pca_comp,
            "pca_range": self.pca_range, "pca_std": self.pca_std, "rest": self.rest, "open": self.open,
            "prior": np.array([self.prior_gain, self.prior_lead], np.float64),
            "features": np.array([self.features.fps, self.features.sub_steps, self.features.before_s,
                                  self.features.after_s, self.features.n_ceps], np.float64),
            "mapping": np.array(self.mapping),
            "mel": np.array([self.mel.fps, self.mel.n_mels, self.mel.before, self.mel.after, self.mel.stride], np.int64),
            **self.learned.to_arrays("mlp_" if self.mapping == "mlp" else "ridge_"),
            **(self.speech.to_arrays("enc_") if self.speech is not None else {}),
            "encoder": np.array([self.encoder.fps, self.encoder.context], np.int64),
            **(self.phones.to_arrays("ph_") if self.phones is not None else {}),
            "phone_features": np.array([self.phone_features.fps, self.phone_features.context], np.int64),
            "speech_prior_lag": np.array(self.speech_prior_lag, np.int64),
            "sample_frames": np.array(self.sample_frames, np.int64),
        }
        tmp = directory / ".bank.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(directory / "bank.npz")
        (directory / "enrollment.json").write_text(json.dumps({"version": BANK_VERSION, **meta}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> "MouthBank":
        with np.load(directory / "bank.npz", allow_pickle=False) as data:
            jpeg, offsets = data["jpeg"], data["jpeg_offsets"]
            patches = np.stack([cv2.imdecode(jpeg[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
                                for i in range(len(offsets) - 1)])
            fps, sub, before, after, ceps = data["features"]
            gain, lead = data["prior"]
            mapping = str(data["mapping"])
            return cls(ref=data["ref"], patches=patches, shapes=data["shapes"], poses=data["poses"],
                       mask=data["mask"].astype(np.float32), pca_mean=data["pca_mean"], pca_comp=data["pca_comp"],
                       pca_range=data["pca_range"], pca_std=data["pca_std"], rest=data["rest"], open=data["open"],
                       learned=Mlp.from_arrays(data, "mlp_") if mapping == "mlp" else Ridge.from_arrays(data, "ridge_"),
                       mapping=mapping,
                       features=FeatureOptions(int(fps), int(sub), float(before), float(after), int(ceps)),
                       mel=MelOptions(*(int(v) for v in data["mel"])),
                       prior_gain=float(gain), prior_lead=int(lead),
                       presenter=load_presenter(directory / PRESENTER_FILE),
                       speech=Ridge.from_arrays(data, "enc_") if "enc_coef" in data else None,
                       encoder=EncoderOptions(*(int(v) for v in data["encoder"])) if "encoder" in data
                       else EncoderOptions(),
                       phones=Ridge.from_arrays(data, "ph_") if "ph_coef" in data else None,
                       phone_features=PhoneFeatureOptions(*(int(v) for v in data["phone_features"]))
                       if "phone_features" in data else PhoneFeatureOptions(),
                       speech_prior_lag=int(data["speech_prior_lag"]) if "speech_prior_lag" in data else 0,
                       sample_frames=int(data["sample_frames"]) if "sample_frames" in data else 0)


def bank_dir(avatar_path: Path) -> Path:
    return avatar_path / BANK_DIR


def enrollment(avatar_path: Path) -> dict | None:
    path = bank_dir(avatar_path) / "enrollment.json"
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return meta if meta.get("version") == BANK_VERSION else None


@lru_cache(maxsize=8)
def _cached(directory: str, mtime_ns: int) -> MouthBank:
    return MouthBank.load(Path(directory))


def load_bank(avatar_path: Path) -> MouthBank | None:
    """The avatar's bank, decoded once per process (and again when it is re-enrolled)."""
    if enrollment(avatar_path) is None:
        return None
    directory = bank_dir(avatar_path)
    try:
        return _cached(str(directory), (directory / "bank.npz").stat().st_mtime_ns)
    except FileNotFoundError:
        return None
