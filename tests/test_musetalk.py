"""MuseTalk engine against the official architecture: parameter counts of the full-size models, strict
loading of checkpoints in the official layout and key format, the official per-frame audio windows,
and an end-to-end render with tiny random weights (the official weights cannot be downloaded here)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

# torch, diffusers and transformers take ~5 s of CPU to import: imported when this module's tests run
# (the fixture below binds the names used here), not when each xdist worker of `make test` collects it.
torch = MuseTalkEngine = load_model = None
SAMPLE_RATE = frame_window_indices = gather_frame_windows = n_frames_for = window_bounds = window_index_table = None
MUSETALK_UNET_CONFIG = SD_VAE_CONFIG = TINY_UNET_CONFIG = WHISPER_TINY_CONFIG = None
build_vae = build_whisper = locate_weights = write_synthetic_checkpoint = PositionalEncoding = build_unet = None
WeightsError = None


@pytest.fixture(scope="module", autouse=True)
def _musetalk_imports():
    global torch, MuseTalkEngine, load_model, SAMPLE_RATE, frame_window_indices, gather_frame_windows, n_frames_for
    global window_bounds, window_index_table, MUSETALK_UNET_CONFIG, SD_VAE_CONFIG, TINY_UNET_CONFIG
    global WHISPER_TINY_CONFIG, build_vae, build_whisper, locate_weights, write_synthetic_checkpoint
    global PositionalEncoding, build_unet, WeightsError
    torch = pytest.importorskip("torch")
    from models.musetalk_net import MuseTalkEngine, load_model
    from models.musetalk_net.audio import (SAMPLE_RATE, frame_window_indices, gather_frame_windows, n_frames_for,
                                           window_bounds, window_index_table)
    from models.musetalk_net.configs import (MUSETALK_UNET_CONFIG, SD_VAE_CONFIG, TINY_UNET_CONFIG,
                                             WHISPER_TINY_CONFIG)
    from models.musetalk_net.engine import build_vae, build_whisper, locate_weights
    from models.musetalk_net.synthetic import write_synthetic_checkpoint
    from models.musetalk_net.unet import PositionalEncoding, build_unet
    from models.weights import WeightsError


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def speech_like(seconds: float, seed: int = 0, tone: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * tone * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("musetalk-models"), version="v15", tiny=True, seed=0)


@pytest.fixture(scope="module")
def engine(tiny_dir) -> MuseTalkEngine:
    return load_model(tiny_dir, version="v15", device="cpu")


# (1) full-size architecture, built on the meta device: shapes only, nothing allocated.

def test_full_size_unet_has_the_official_parameter_count():
    unet = build_unet(MUSETALK_UNET_CONFIG, device="meta")
    assert n_params(unet) == 849_947_844
    assert unet.config.in_channels == 8 and unet.config.out_channels == 4 and unet.config.cross_attention_dim == 384


def test_full_size_vae_and_whisper_encoder_parameter_counts():
    vae = build_vae(SD_VAE_CONFIG, device="meta")
    assert n_params(vae) == 83_653_863 and round(n_params(vae) / 1e6, 2) == 83.65
    assert n_params(vae.decoder) == 49_490_179 and round(n_params(vae.decoder) / 1e6, 1) == 49.5
    assert vae.config.scaling_factor == 0.18215
    whisper = build_whisper(WHISPER_TINY_CONFIG, device="meta")
    assert n_params(whisper.encoder) == 8_208_384 and round(n_params(whisper.encoder) / 1e6, 1) == 8.2
    assert len(whisper.encoder.layers) == 4 and whisper.config.d_model == 384


def test_positional_encoding_is_the_official_sinusoid():
    pe = PositionalEncoding(d_model=384, max_len=5000)
    assert pe.pe.shape == (1, 5000, 384)
    pos, i = 7, 10  # channel 2i is sin, 2i+1 is cos of pos / 10000^(2i/384)
    angle = pos / 10000 ** (2 * i / 384)
    assert pe.pe[0, pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe.pe[0, pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    x = torch.zeros(2, 50, 384)
    assert torch.equal(pe(x), pe.pe[:, :50].expand(2, -1, -1))


# (2) the official layout, loaded strictly.

def test_synthetic_checkpoint_has_the_official_layout_and_loads_strictly(tiny_dir, engine):
    for rel in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json",
                "sd-vae/diffusion_pytorch_model.bin", "whisper/config.json", "whisper/pytorch_model.bin",
                "whisper/preprocessor_config.json"):
        assert (tiny_dir / rel).is_file(), rel
    unet_state = torch.load(tiny_dir / "musetalkV15/unet.pth", weights_only=True)
    assert set(unet_state) == set(build_unet(TINY_UNET_CONFIG, device="meta").state_dict())
    for key in ("conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"):
        assert torch.equal(engine.unet.state_dict()[key], unet_state[key])
    vae_keys = torch.load(tiny_dir / "sd-vae/diffusion_pytorch_model.bin", weights_only=True)
    assert "encoder.mid_block.attentions.0.query.weight" in vae_keys  # sd-vae-ft-mse's pre-refactor names
    whisper_keys = torch.load(tiny_dir / "whisper/pytorch_model.bin", weights_only=True)
    assert "model.encoder.conv1.weight" in whisper_keys and "model.decoder.embed_tokens.weight" in whisper_keys
    assert engine.crop_size == 64 and engine.latent_size == 8 and engine.audio_tokens == 50


@pytest.mark.parametrize("rel, old", [
    ("musetalkV15/unet.pth", "conv_in.weight"),
    ("sd-vae/diffusion_pytorch_model.bin", "decoder.conv_out.weight"),
    ("whisper/pytorch_model.bin", "model.encoder.layers.0.fc1.weight"),
])
def test_a_renamed_key_fails_to_load(tiny_dir, tmp_path, rel, old):
    broken = tmp_path / "models"
    shutil.copytree(tiny_dir, broken)
    state = torch.load(broken / rel, weights_only=True)
    state[old + "_renamed"] = state.pop(old)
    torch.save(state, broken / rel)
    with pytest.raises(WeightsError, match="keys do not match the official") as info:
        load_model(broken)
    assert old.removeprefix("model.") in str(info.value) and "_renamed" in str(info.value)


def test_weights_of_another_architecture_fail_to_load(tiny_dir, tmp_path):
    broken = tmp_path / "models"
    shutil.copytree(tiny_dir, broken)
    config = json.loads((broken / "musetalkV15/musetalk.json").read_text())
    config["block_out_channels"] = [16, 16, 16, 16]
    (broken / "musetalkV15/musetalk.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="shapes do not match"):
        load_model(broken)


def test_missing_files_name_every_official_file(tmp_path):
    with pytest.raises(WeightsError) as info:
        load_model(tmp_path)
    message = str(info.value)
    for rel in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json",
                "sd-vae/diffusion_pytorch_model.safetensors or sd-vae/diffusion_pytorch_model.bin",
                "whisper/config.json", "whisper/preprocessor_config.json"):
        assert rel in message
    assert "python -m models download" in message
    with pytest.raises(WeightsError, match="musetalk/pytorch_model.bin"):
        locate_weights(tmp_path, "v10")


def test_v10_layout_loads(tmp_path):
    write_synthetic_checkpoint(tmp_path, version="v10", tiny=True, seed=1)
    assert (tmp_path / "musetalk/pytorch_model.bin").is_file()
    v10 = load_model(tmp_path, version="v10")
    assert v10.version == "v10" and v10.audio_edge == "clamp"


def test_fp16_is_refused_on_cpu(tiny_dir):
    with pytest.raises(ValueError, match="fp16"):
        load_model(tiny_dir, dtype="fp16")


# (3) official per-frame audio windows.

def official_v15_windows(states: np.ndarray, n_frames: int) -> np.ndarray:
    """Reference: AudioProcessor.get_whisper_chunk at 25 fps (4 zero steps before, 12 after, slice 2i:2i+10)."""
    padded = np.concatenate([np.zeros_like(states[:4]), states, np.zeros_like(states[:12])])
    return np.stack([padded[2 * i: 2 * i + 10].reshape(-1, states.shape[-1]) for i in range(n_frames)])


def test_frame_window_indices_follow_the_official_indexing():
    assert frame_window_indices(0, 60).tolist() == [-1, -1, -1, -1, 0, 1, 2, 3, 4, 5]
    assert frame_window_indices(1, 60).tolist() == [-1, -1, 0, 1, 2, 3, 4, 5, 6, 7]
    for i in range(2, 27):
        assert frame_window_indices(i, 60).tolist() == list(range(2 * i - 4, 2 * i + 6))
    assert frame_window_indices(28, 60).tolist() == [52, 53, 54, 55, 56, 57, 58, 59, -1, -1]
    assert frame_window_indices(29, 60).tolist() == [54, 55, 56, 57, 58, 59, -1, -1, -1, -1]
    assert window_index_table(30, 60).shape == (30, 10)
    # v1.0 repeats the edge steps instead (audio2feature.get_sliced_feature)
    assert frame_window_indices(0, 60, edge="clamp").tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert frame_window_indices(29, 60, edge="clamp").tolist() == [54, 55, 56, 57, 58, 59, 59, 59, 59, 59]


def test_gathered_windows_match_the_official_reshape():
    states = np.random.default_rng(0).standard_normal((60, 5, 384)).astype(np.float32)
    ours = gather_frame_windows(states, 30)
    assert ours.shape == (30, 50, 384)
    np.testing.assert_array_equal(ours, official_v15_windows(states, 30))
    assert not ours[0, :20].any() and ours[0, 20:].any()  # first 4 steps x 5 states are zero padding


def test_frame_count_and_30s_windows():
    assert n_frames_for(int(1.2 * SAMPLE_RATE)) == 30
    assert n_frames_for(SAMPLE_RATE // 50) == 1  # 20 ms rounds half up to one frame
    assert window_bounds(31 * SAMPLE_RATE) == [(0, 480000), (480000, 496000)]


def test_audio_features_are_the_five_whisper_states_per_step(engine):
    audio = speech_like(1.2)
    feats = engine.audio_features(audio)
    assert feats.shape == (30, 50, 384) and feats.dtype == np.float32
    mel = engine.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        hidden = engine.whisper(mel, output_hidden_states=True).hidden_states
    assert len(hidden) == 5
    states = torch.stack(hidden, dim=2)[0, :60].numpy()  # 1.2 s = 60 steps
    np.testing.assert_allclose(feats, official_v15_windows(states, 30), rtol=1e-5, atol=1e-5)


def test_long_audio_is_encoded_in_30s_windows(engine):
    audio = speech_like(31.0, seed=2)
    feats = engine.audio_features(audio)
    assert feats.shape == (775, 50, 384)
    second_window = engine.audio_features(audio[480000:])  # steps after 30 s come from their own window
    np.testing.assert_allclose(feats[760], second_window[10], rtol=1e-4, atol=1e-4)


# (4) end to end with the tiny config.

def test_end_to_end_render_depends_on_the_audio(engine):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (30, engine.crop_size, engine.crop_size, 3), dtype=np.uint8)
    latents = engine.encode_crops(crops)
    assert latents.shape == (30, 8, 8, 8) and latents.dtype == np.float32
    audio_a, audio_b = speech_like(1.2, seed=0), speech_like(1.2, seed=1, tone=600.0)
    feats_a, feats_b = engine.audio_features(audio_a), engine.audio_features(audio_b)
    frames_a = engine.render_crops(latents, feats_a)
    assert frames_a.shape == (30, 64, 64, 3) and frames_a.dtype == np.uint8
    assert len(frames_a) == round(audio_a.size / SAMPLE_RATE * 25)
    # batch composition changes float summation order, hence at most one grey level
    again = engine.render_crops(latents[:3], feats_a[:3])
    assert np.abs(frames_a[:3].astype(int) - again).max() <= 1
    frames_b = engine.render_crops(latents, feats_b)
    assert (frames_a != frames_b).mean() > 0.01


def test_masked_latent_differs_from_reference_latent(engine):
    crops = np.full((1, engine.crop_size, engine.crop_size, 3), 200, np.uint8)
    latents = engine.encode_crops(crops)
    assert not np.allclose(latents[:, :4], latents[:, 4:])
    with pytest.raises(ValueError, match="uint8"):
        engine.encode_crops(np.zeros((1, 32, 32, 3), np.uint8))


def test_the_api_side_of_models_does_not_import_torch():
    code = "import sys, models, models.weights, models.__main__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
