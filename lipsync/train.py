"""Training the network an enrollment gets for its log-mel mapping (torch, at enrollment only; inference is numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync.features import Mlp


@dataclass(frozen=True)
class MlpOptions:
    # Chosen on pd-reagan-farewell and pd-tedlieu-wda (see features.MelOptions); a wider net (64,
    # 128) or longer training did not do better there.
    hidden: int = 32
    weight_decay: float = 1e-2
    epochs: int = 200
    learning_rate: float = 3e-3
    input_dropout: float = 0.2
    hidden_dropout: float = 0.3
    ensemble: int = 3


def fit_mlp(x: np.ndarray, y: np.ndarray, opts: MlpOptions = MlpOptions()) -> Mlp:
    """Full-batch AdamW on standardised inputs and targets; seeded, one thread: the same sample
    gives the same network."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mean_x, std_x = x.mean(axis=0), x.std(axis=0) + 1e-6
        mean_y, std_y = y.mean(axis=0), y.std(axis=0) + 1e-6
        xt = torch.tensor((x - mean_x) / std_x, dtype=torch.float32)
        yt = torch.tensor((y - mean_y) / std_y, dtype=torch.float32)
        nets = [_train_one(xt, yt, opts, seed) for seed in range(opts.ensemble)]
    finally:
        torch.set_num_threads(threads)

    def stack(i: int, transpose: bool) -> np.ndarray:
        return np.stack([(n[i].weight.detach().numpy().T if transpose else n[i].bias.detach().numpy()) for n in nets])

    return Mlp(mean_x.astype(np.float32), std_x.astype(np.float32), mean_y.astype(np.float32),
               std_y.astype(np.float32), stack(1, True), stack(1, False), stack(4, True), stack(4, False))


def _train_one(x, y, opts: MlpOptions, seed: int):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Dropout(opts.input_dropout), torch.nn.Linear(x.shape[1], opts.hidden),
                              torch.nn.GELU(), torch.nn.Dropout(opts.hidden_dropout),
                              torch.nn.Linear(opts.hidden, y.shape[1]))
    optimiser = torch.optim.AdamW(net.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay)
    net.train()
    for _ in range(opts.epochs):
        optimiser.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        optimiser.step()
    net.eval()
    return net
