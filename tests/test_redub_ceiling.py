"""bench.redub's ceiling rebuilds the real lips from their opening (and width) alone: what follows the
series is kept, what does not (a head's nod, a smile) is left out."""

from __future__ import annotations

import numpy as np

from bench.redub import rebuilt_from


def test_lips_rebuilt_from_their_opening_keep_only_what_follows_it():
    rng = np.random.default_rng(3)
    n, points = 200, 40
    base = rng.normal(size=(points, 2))
    with_opening = rng.normal(size=(points, 2))  # how each point moves as the mouth opens
    nod = rng.normal(size=(points, 2))  # a movement that has nothing to do with the opening
    opening = np.abs(np.sin(np.arange(n) / 3.0))
    other = rng.normal(size=n)
    other -= np.polyval(np.polyfit(opening, other, 1), opening)  # uncorrelated with the opening
    follows = base + opening[:, None, None] * with_opening
    shapes = follows + other[:, None, None] * nod

    rebuilt = rebuilt_from(shapes, opening[:, None])

    assert rebuilt.shape == shapes.shape and rebuilt.dtype == np.float32
    np.testing.assert_allclose(rebuilt, follows, atol=1e-4)
    # With the other movement as a second series, everything is rebuilt.
    np.testing.assert_allclose(rebuilt_from(shapes, np.column_stack([opening, other])), shapes, atol=1e-4)
