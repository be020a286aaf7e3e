"""Random MuseTalk weights in the official file layout and key format, for tests and benchmarks where
the official weights cannot be downloaded.

The files are written the way the official release ships them, so `load_model` reads them through the
same path as the real ones: unet.pth / pytorch_model.bin as a plain torch.save'd UNet state dict,
sd-vae with the pre-refactor attention key names of the 2022 sd-vae-ft-mse file, and whisper as a Hugging
Face WhisperForConditionalGeneration checkpoint ("model." prefix, tied LM head left out as
save_pretrained does).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from models.musetalk_net.audio import build_feature_extractor
from models.musetalk_net.configs import (MUSETALK_UNET_CONFIG, SD_VAE_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG,
                                     TINY_WHISPER_CONFIG, WHISPER_PREPROCESSOR_CONFIG, WHISPER_TINY_CONFIG)
from models.musetalk_net.engine import (LEGACY_VAE_ATTENTION, UNET_FILES, VAE_DIR, WHISPER_DIR, EngineOptions,
                                    MuseTalkEngine, build_vae, build_whisper, normalise_version, resolve_dtype)
from models.musetalk_net.unet import build_unet

log = logging.getLogger(__name__)

_MODERN_TO_LEGACY = {modern: legacy for legacy, modern in LEGACY_VAE_ATTENTION.items()}


def configs(tiny: bool) -> tuple[dict, dict, dict]:
    """(UNet, VAE, whisper) configs: the official ones or their tiny test variants."""
    if tiny:
        return TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_WHISPER_CONFIG
    return MUSETALK_UNET_CONFIG, SD_VAE_CONFIG, WHISPER_TINY_CONFIG


def legacy_vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of engine.convert_legacy_vae_keys: the key names of the 2022 sd-vae-ft-mse checkpoint."""
    out = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        for modern, legacy in _MODERN_TO_LEGACY.items():
            if ".attentions." in prefix and prefix.endswith(f".{modern}"):
                prefix = prefix[: -len(modern)] + legacy
                break
        out[f"{prefix}.{leaf}"] = value
    return out


def write_synthetic_checkpoint(models_dir: Path, version: str = "v15", tiny: bool = True, seed: int = 0) -> Path:
    """Random weights for `version` in the official layout under `models_dir`; returns models_dir.

    Full size (tiny=False) writes about 3.9 GB.
    """
    version = normalise_version(version)
    models_dir = Path(models_dir)
    unet_config, vae_config, whisper_config = configs(tiny)
    torch.manual_seed(seed)
    unet_rel, unet_config_rel = UNET_FILES[version]
    _save_json(models_dir / unet_config_rel, unet_config)
    _save_tensors(models_dir / unet_rel, build_unet(unet_config).state_dict())

    _save_json(models_dir / VAE_DIR / "config.json", vae_config)
    _save_tensors(models_dir / VAE_DIR / "diffusion_pytorch_model.bin", legacy_vae_keys(build_vae(vae_config).state_dict()))

    _save_json(models_dir / WHISPER_DIR / "config.json", whisper_config)
    _save_json(models_dir / WHISPER_DIR / "preprocessor_config.json", WHISPER_PREPROCESSOR_CONFIG)
    whisper_state = {f"model.{k}": v for k, v in build_whisper(whisper_config).state_dict().items()}
    _save_tensors(models_dir / WHISPER_DIR / "pytorch_model.bin", whisper_state)
    log.info("wrote synthetic MuseTalk %s (%s) weights under %s", version, "tiny" if tiny else "full size", models_dir)
    return models_dir


def random_engine(tiny: bool = False, version: str = "v15", device: str = "cpu", dtype=None, seed: int = 0,
                  batch_size: int = 8) -> MuseTalkEngine:
    """An engine with random weights built in memory (no files): for speed measurements at full size."""
    version = normalise_version(version)
    unet_config, vae_config, whisper_config = configs(tiny)
    torch.manual_seed(seed)
    vae = build_vae(vae_config)
    options = EngineOptions(version=version, device=device, dtype=resolve_dtype(torch.device(device), dtype),
                            crop_size=vae.config.sample_size, batch_size=batch_size)
    return MuseTalkEngine(build_unet(unet_config), vae, build_whisper(whisper_config).encoder,
                          build_feature_extractor(WHISPER_PREPROCESSOR_CONFIG), options)


def _save_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _save_tensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), path)
