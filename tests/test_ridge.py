"""lipsync.features.fit_ridge, the closed-form ridge every enrollment mapping but the network uses:
its solutions are the ridge's (checked against least squares on the penalised system, an independent
route), for wide features (the encoder's thousands of columns) and tall ones, for one penalty and for
several; tempo copies (`extra`) join the final fit but not the choice of penalty."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.features import _solve, fit_ridge


def _reference(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    xs = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    stacked = np.concatenate([xs, np.sqrt(alpha) * np.eye(x.shape[1])])
    target = np.concatenate([y - y.mean(axis=0), np.zeros((x.shape[1], y.shape[1]))])
    return np.linalg.lstsq(stacked.astype(np.float64), target, rcond=None)[0]


def _data(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[:, 3] = 2 * x[:, 2]  # collinear columns, as stacked context frames nearly are
    y = x[:, :6] @ rng.standard_normal((6, 4)) + 0.5 * rng.standard_normal((rows, 4))
    return x, y.astype(np.float32)


@pytest.mark.parametrize("rows, cols", [(120, 400), (400, 60)])
@pytest.mark.parametrize("alphas", [(30.0,), (3.0, 300.0, 3000.0)])
def test_solutions_are_the_ridge_solutions(rows, cols, alphas):
    x, y = _data(rows, cols)
    for model in _solve(x, y, alphas):
        expected = _reference(x, y, model.alpha)
        assert np.abs(model.coef - expected).max() <= 1e-4 * np.abs(expected).max()


def test_extra_rows_join_the_fit_but_not_the_choice_of_penalty():
    x, y = _data(200, 300)
    copies, targets = _data(400, 300, seed=1)
    alone = fit_ridge(x, y, alphas=(10.0, 100.0, 1000.0))
    both = fit_ridge(x, y, alphas=(10.0, 100.0, 1000.0), extra=[(copies, targets)])
    assert both.alpha == alone.alpha and both.cv_r == alone.cv_r
    expected = _reference(np.concatenate([x, copies]), np.concatenate([y, targets]), both.alpha)
    assert np.abs(both.coef - expected).max() <= 1e-4 * np.abs(expected).max()
