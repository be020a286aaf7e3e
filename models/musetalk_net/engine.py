"""The MuseTalk lip-sync engine: the official weights under models/, loaded strictly, and the three
batched steps of a render (audio -> per-frame audio tokens, face crops -> UNet input latents, latents +
audio tokens -> lip-synced crops).

Load once per process and never fork afterwards: torch's thread pools (and CUDA) do not survive a fork.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from models.musetalk_net.audio import WINDOW_STEPS, build_feature_extractor, frame_features
from models.musetalk_net.configs import model_kwargs
from models.musetalk_net.unet import PositionalEncoding, build_unet
from models.weights import WeightsError

log = logging.getLogger(__name__)

# Official layout under models/ (download_weights.sh of the MuseTalk release).
UNET_FILES = {"v15": ("musetalkV15/unet.pth", "musetalkV15/musetalk.json"),
              "v10": ("musetalk/pytorch_model.bin", "musetalk/musetalk.json")}
VERSION_ALIASES = {"v15": "v15", "v1.5": "v15", "1.5": "v15", "v10": "v10", "v1.0": "v10", "v1": "v10", "1.0": "v10"}
VAE_DIR = "sd-vae"
VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
WHISPER_DIR = "whisper"
WHISPER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
SOURCES = ("TMElyralab/MuseTalk (musetalkV15/, musetalk/), stabilityai/sd-vae-ft-mse (-> sd-vae/), "
           "openai/whisper-tiny (-> whisper/)")

# sd-vae-ft-mse predates diffusers' attention refactor: its mid-block attention is stored as
# query/key/value/proj_attn. diffusers' from_pretrained renames them on load; a strict load must too.
LEGACY_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_KEY = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}


@dataclass(frozen=True)
class WeightFiles:
    unet: Path
    unet_config: Path
    vae_config: Path
    vae_weights: Path
    whisper_config: Path
    whisper_weights: Path
    whisper_preprocessor: Path


@dataclass(frozen=True)
class EngineOptions:
    version: str = "v15"
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    crop_size: int = 256
    batch_size: int = 8  # frames per UNet/VAE call; the official offline script uses 8


def normalise_version(version: str) -> str:
    try:
        return VERSION_ALIASES[version.lower()]
    except KeyError:
        raise ValueError(f"unknown MuseTalk version {version!r}; use 'v15' or 'v10'") from None


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    """fp16 on CUDA by default (as the official scripts); fp32 or bf16 on CPU, where fp16 kernels are
    missing or slower than fp32."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    resolved = _DTYPES.get(dtype.lower()) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported dtype {dtype!r}; use fp32, bf16 or (CUDA only) fp16")
    if device.type == "cpu" and resolved == torch.float16:
        raise ValueError("fp16 is a CUDA dtype here; on CPU use fp32 or bf16")
    return resolved


def locate_weights(models_dir: Path, version: str = "v15") -> WeightFiles:
    """The official files for `version`, or one WeightsError naming every missing file."""
    version = normalise_version(version)
    models_dir = Path(models_dir)
    missing: list[str] = []

    def need(rel: str) -> Path:
        if not (models_dir / rel).is_file():
            missing.append(rel)
        return models_dir / rel

    def need_one_of(folder: str, names: tuple[str, ...]) -> Path:
        for name in names:
            if (models_dir / folder / name).is_file():
                return models_dir / folder / name
        missing.append(" or ".join(f"{folder}/{n}" for n in names))
        return models_dir / folder / names[-1]

    unet_rel, unet_config_rel = UNET_FILES[version]
    files = WeightFiles(
        unet=need(unet_rel), unet_config=need(unet_config_rel),
        vae_config=need(f"{VAE_DIR}/config.json"), vae_weights=need_one_of(VAE_DIR, VAE_WEIGHTS),
        whisper_config=need(f"{WHISPER_DIR}/config.json"),
        whisper_weights=need_one_of(WHISPER_DIR, WHISPER_WEIGHTS),
        whisper_preprocessor=need(f"{WHISPER_DIR}/preprocessor_config.json"),
    )
    if missing:
        raise WeightsError(
            f"MuseTalk {version} weights are missing under {models_dir}: {', '.join(missing)}. "
            f"Place the official weights there ({SOURCES}); `python -m models download` fetches them "
            f"on a machine with internet access.")
    return files


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON config ({exc})") from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: weights_only refuses pickled code, so a tampered checkpoint cannot run anything."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a corrupt file
        raise WeightsError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a flat state dict of tensors")
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """load_state_dict(strict=True) into a module built on the meta device, with an error that says
    which keys differ. assign=True adopts the checkpoint's tensors instead of copying them."""
    expected, got = set(module.state_dict()), set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{path}: keys do not match the official {what} architecture "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}). "
            f"Use the official file for this version, unmodified.")
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: tensor shapes do not match the {what} config: {exc}") from exc
    left = [n for n, t in chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if left:
        raise WeightsError(f"{path}: {what} tensors not set by the checkpoint: {left[:3]}")


def convert_legacy_vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0 (shapes are unchanged)."""
    out = {}
    for key, value in state.items():
        match = _LEGACY_KEY.match(key)
        out[f"{match[1]}.{LEGACY_VAE_ATTENTION[match[2]]}.{match[3]}" if match else key] = value
    return out


def whisper_model_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF whisper checkpoints are saved from WhisperForConditionalGeneration: WhisperModel's keys under
    "model.", plus the LM head proj_out tied to the decoder embedding. WhisperModel.from_pretrained (what
    the official code calls) strips the prefix and drops the head; the same happens here before a
    strict load, so any other difference still fails."""
    return {key.removeprefix("model."): value for key, value in state.items() if key != "proj_out.weight"}


def load_unet(files: WeightFiles) -> UNet2DConditionModel:
    unet = build_unet(read_json(files.unet_config), device="meta")
    load_strict(unet, read_state_dict(files.unet), files.unet, "MuseTalk UNet")
    return unet


def build_vae(config: dict, device: str | torch.device | None = None) -> AutoencoderKL:
    with torch.device(device or "cpu"):
        return AutoencoderKL(**model_kwargs(config))


def load_vae(files: WeightFiles) -> AutoencoderKL:
    vae = build_vae(read_json(files.vae_config), device="meta")
    load_strict(vae, convert_legacy_vae_keys(read_state_dict(files.vae_weights)), files.vae_weights, "sd-vae")
    return vae


def build_whisper(config: dict, device: str | torch.device | None = None) -> WhisperModel:
    with torch.device(device or "cpu"):
        return WhisperModel(WhisperConfig.from_dict(config))


def load_whisper(files: WeightFiles) -> tuple[torch.nn.Module, WhisperFeatureExtractor]:
    """The whole WhisperModel is loaded strictly (so a wrong file fails) and only its encoder kept."""
    whisper = build_whisper(read_json(files.whisper_config), device="meta")
    load_strict(whisper, whisper_model_keys(read_state_dict(files.whisper_weights)), files.whisper_weights,
                "whisper-tiny")
    return whisper.encoder, build_feature_extractor(read_json(files.whisper_preprocessor))


def load_model(models_dir: Path, version: str = "v15", device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None, *, batch_size: int = 8) -> MuseTalkEngine:
    """The one entry point: official weights under `models_dir` -> a ready MuseTalkEngine."""
    version = normalise_version(version)
    torch_device = torch.device(device)
    resolved = resolve_dtype(torch_device, dtype)
    files = locate_weights(Path(models_dir), version)
    started = time.perf_counter()
    unet = load_unet(files)
    vae = load_vae(files)
    encoder, extractor = load_whisper(files)
    engine = MuseTalkEngine(unet, vae, encoder, extractor, EngineOptions(
        version=version, device=str(torch_device), dtype=resolved,
        crop_size=vae.config.sample_size, batch_size=batch_size))
    log.info("MuseTalk %s loaded from %s in %.1f s (%s, %s)", version, models_dir,
             time.perf_counter() - started, torch_device, resolved)
    return engine


class MuseTalkEngine:
    """Batched MuseTalk inference on numpy in, numpy out.

    crop_size is the face-crop side (256 with the official VAE config, whose sample_size it is);
    latents are crop_size/8 square.
    """

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, whisper_encoder: torch.nn.Module,
                 feature_extractor: WhisperFeatureExtractor, options: EngineOptions):
        self.options = options
        self.version = options.version
        self.device = torch.device(options.device)
        self.dtype = options.dtype
        self.crop_size = options.crop_size
        self.batch_size = options.batch_size
        d_model = whisper_encoder.config.d_model
        if unet.config.cross_attention_dim != d_model:
            raise WeightsError(f"UNet cross_attention_dim {unet.config.cross_attention_dim} != whisper d_model {d_model}")
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        if self.crop_size % (vae_factor * unet_factor):
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of {vae_factor * unet_factor}")
        self.latent_size = self.crop_size // vae_factor
        self.latent_channels = vae.config.latent_channels
        self.latent_scale = float(vae.config.scaling_factor)
        self.audio_tokens = WINDOW_STEPS * (len(whisper_encoder.layers) + 1)
        self.audio_dim = d_model
        # v1.0's audio2feature repeats the clip's edge steps; v1.5 pads with zeros.
        self.audio_edge = "zero" if self.version == "v15" else "clamp"
        self.unet = self._prepare(unet)
        self.vae = self._prepare(vae)
        self.whisper = self._prepare(whisper_encoder)
        self.feature_extractor = feature_extractor
        self.pe = PositionalEncoding(d_model=d_model).to(self.device)

    def _prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        # torch's own Module.to: diffusers' override warns about fp32-only modules even when it has none,
        # and none of these models keeps any module in fp32.
        module = torch.nn.Module.to(module, device=self.device, dtype=self.dtype)
        return module.eval().requires_grad_(False)

    def audio_features(self, audio_16k: np.ndarray, fps: int = 25) -> np.ndarray:
        """[round(duration * fps), 50, 384] float32 audio tokens for a mono 16 kHz clip."""
        with torch.inference_mode():
            return frame_features(self.whisper, self.feature_extractor, audio_16k, fps=fps, edge=self.audio_edge,
                                  device=self.device, dtype=self.dtype)

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """[B, S, S, 3] uint8 RGB crops -> [B, 8, S/8, S/8] float32 UNet inputs: the latent of the crop
        with its lower half black, then the latent of the whole crop (the identity reference)."""
        crops = np.asarray(crops)
        expected = (self.crop_size, self.crop_size, 3)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != expected:
            raise ValueError(f"crops must be uint8 [B, {self.crop_size}, {self.crop_size}, 3], "
                             f"got {crops.dtype} {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, 2 * self.latent_channels, self.latent_size, self.latent_size), np.float32)
        return np.concatenate([self._encode(crops[i:i + self.batch_size])
                               for i in range(0, len(crops), self.batch_size)])

    @torch.inference_mode()
    def _encode(self, crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        masked = x.clone()
        masked[:, :, self.crop_size // 2:, :] = 0.0  # black in [0, 1], i.e. -1 after normalising
        both = (torch.cat([masked, x]) * 2.0 - 1.0).to(self.dtype)
        latents = self.vae.encode(both).latent_dist.mean * self.latent_scale
        masked_latents, ref_latents = latents.chunk(2)
        return torch.cat([masked_latents, ref_latents], dim=1).float().cpu().numpy()

    def render_crops(self, latents: np.ndarray, audio_feats: np.ndarray) -> np.ndarray:
        """[B, 8, L, L] latents + [B, 50, 384] audio tokens -> [B, S, S, 3] uint8 RGB crops."""
        latents, audio_feats = np.asarray(latents, np.float32), np.asarray(audio_feats, np.float32)
        self._check_render_inputs(latents, audio_feats)
        out = [self.decode_latents(self.predict_latents(latents[i:i + self.batch_size],
                                                        audio_feats[i:i + self.batch_size]))
               for i in range(0, len(latents), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.crop_size, self.crop_size, 3), np.uint8)

    @torch.inference_mode()
    def predict_latents(self, latents: np.ndarray, audio_feats: np.ndarray) -> torch.Tensor:
        """One UNet pass at timestep 0 (MuseTalk inpaints in a single step; there is no sampler)."""
        audio = self.pe(torch.from_numpy(audio_feats).to(self.device)).to(self.dtype)
        sample = torch.from_numpy(latents).to(self.device, self.dtype)
        timestep = torch.tensor([0], device=self.device)
        return self.unet(sample, timestep, encoder_hidden_states=audio).sample

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        image = self.vae.decode(latents / self.latent_scale).sample
        image = (image.float() / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
        return image.permute(0, 2, 3, 1).cpu().numpy()

    def _check_render_inputs(self, latents: np.ndarray, audio_feats: np.ndarray) -> None:
        want_latents = (2 * self.latent_channels, self.latent_size, self.latent_size)
        if latents.ndim != 4 or latents.shape[1:] != want_latents:
            raise ValueError(f"latents must be [B, {', '.join(map(str, want_latents))}], got {latents.shape}")
        if audio_feats.ndim != 3 or audio_feats.shape[1:] != (self.audio_tokens, self.audio_dim):
            raise ValueError(f"audio_feats must be [B, {self.audio_tokens}, {self.audio_dim}], got {audio_feats.shape}")
        if len(latents) != len(audio_feats):
            raise ValueError(f"{len(latents)} latents but {len(audio_feats)} audio windows")
