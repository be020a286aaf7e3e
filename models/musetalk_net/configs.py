"""The official MuseTalk configurations as plain dicts, and tiny variants of the same structure for tests.

The full dicts are what the official release ships (`musetalk.json`, `sd-vae-ft-mse/config.json`,
`whisper-tiny/config.json` and `preprocessor_config.json`); the TINY_* dicts keep every structural
choice (block types, 8x VAE downsampling, 5 whisper hidden states of width 384 = the UNet's
cross-attention width, 30 s whisper window) and only shrink channel counts, so the same code path
runs in seconds on a CPU.
"""

from __future__ import annotations

# UNet2DConditionModel kwargs exactly as in the official musetalk.json (v1.0 and v1.5 share it).
# `attention_head_dim=8` is diffusers' legacy spelling of "8 attention heads".
MUSETALK_UNET_CONFIG: dict = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# stabilityai/sd-vae-ft-mse config.json. The official file has no "scaling_factor" key; diffusers then
# defaults to 0.18215, the value MuseTalk reads from vae.config. It is spelled out here so the dict alone
# says which latent scale the UNet was trained with.
SD_VAE_CONFIG: dict = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

LATENT_SCALE = 0.18215

# openai/whisper-tiny config.json, model fields only: the generation-only fields of the official file
# (suppress_tokens, begin_suppress_tokens, forced_decoder_ids) do not change any weight shape.
WHISPER_TINY_CONFIG: dict = {
    "_name_or_path": "openai/whisper-tiny",
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 50257,
    "d_model": 384,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 4,
    "decoder_start_token_id": 50258,
    "dropout": 0.0,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 4,
    "eos_token_id": 50257,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_length": 448,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "model_type": "whisper",
    "num_hidden_layers": 4,
    "num_mel_bins": 80,
    "pad_token_id": 50257,
    "scale_embedding": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 51865,
}

# openai/whisper-tiny preprocessor_config.json without its precomputed "mel_filters" table, which
# WhisperFeatureExtractor recomputes from these numbers.
WHISPER_PREPROCESSOR_CONFIG: dict = {
    "chunk_length": 30,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 80,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "WhisperProcessor",
    "return_attention_mask": False,
    "sampling_rate": 16000,
}

TINY_UNET_CONFIG: dict = {
    **MUSETALK_UNET_CONFIG,
    "block_out_channels": [32, 32, 32, 32],
    "norm_num_groups": 8,
    "sample_size": 8,
}

TINY_VAE_CONFIG: dict = {
    **SD_VAE_CONFIG,
    "block_out_channels": [16, 16, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}

# d_model, the 4 encoder layers (5 hidden states), the 1500 source positions and the 80 mel bins stay
# official: together they fix the [50, 384] audio condition. Only the feed-forward width, the decoder
# and the vocabulary shrink.
TINY_WHISPER_CONFIG: dict = {
    **WHISPER_TINY_CONFIG,
    "_name_or_path": "tiny-random-whisper",
    "decoder_ffn_dim": 256,
    "decoder_layers": 1,
    "encoder_ffn_dim": 256,
    "max_length": 32,
    "max_target_positions": 32,
    "vocab_size": 64,
    "bos_token_id": 61,
    "eos_token_id": 61,
    "pad_token_id": 61,
    "decoder_start_token_id": 62,
}


def model_kwargs(config: dict) -> dict:
    """A config file minus its metadata keys (``_class_name``, ``_diffusers_version``, ...)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}
