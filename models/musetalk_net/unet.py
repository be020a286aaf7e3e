"""The MuseTalk UNet: diffusers UNet2DConditionModel from musetalk.json, and the sinusoidal positional
encoding the official code adds to the 50 audio tokens before cross-attention."""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from models.musetalk_net.configs import model_kwargs


class PositionalEncoding(nn.Module):
    """Same numbers as the official `musetalk.models.unet.PositionalEncoding` (sin on even channels,
    cos on odd ones, base 10000), so the UNet sees the audio tokens it was trained on."""

    def __init__(self, d_model: int = 384, max_len: int = 5000):
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _batch, seq_len, _d_model = x.size()
        return x + self.pe[:, :seq_len, :].to(x.device)


def build_unet(config: dict, device: str | torch.device | None = None) -> UNet2DConditionModel:
    """A UNet2DConditionModel from a musetalk.json dict. On device "meta" nothing is allocated, which is
    how the loader avoids initialising 850 M parameters it is about to overwrite."""
    with torch.device(device or "cpu"):
        return UNet2DConditionModel(**model_kwargs(config))
