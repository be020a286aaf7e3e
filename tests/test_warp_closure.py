"""A photograph speaking by `warp` shuts its lips on m, b and p of the fleet's own synthesised speech,
also when the photo smiles with its teeth showing (the bundled demo portrait): both lips move to meet,
the teeth disappear behind them, and the mouth reopens to the photo's own look, teeth included, on
vowels; the portrait's idle sway and blinks go on underneath. Before, the warp could not close a
mouth below the photo's own parted rest: its teeth showed at every m, b and p (0 of the onsets shut).

In-process (no fleet, no ../shared): the demo portrait prepared as `python -m avatars demo` does,
speech from the fleet's own voices with their phone times, every frame meshed by the service's face
mesh (the measures are bench.photo_closure's, which prints the same figures).
"""

from __future__ import annotations

import numpy as np
import pytest

from avatars.demo import write_demo_portrait
from avatars.face import EYE_L_LOWER, EYE_R_LOWER, NOSE_TIP
from avatars.prepare import prepare
from avatars.store import Avatar
from bench.photo_closure import EN, ZH, closed_share, gap_over_width, render, synthesised, teeth


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Avatar:
    root = tmp_path_factory.mktemp("photo")
    prepare(write_demo_portrait(root / "astronaut.png"), root / "astro")
    return Avatar(root / "astro")


@pytest.mark.parametrize("language,text", [("zh", ZH), ("en", EN)])
def test_a_smiling_photo_shuts_its_lips_on_bilabials_and_shows_its_teeth_on_vowels(photo, language, text):
    rest_lm = photo.landmarks_at(0)
    rest_gap, rest_teeth = gap_over_width(rest_lm), teeth(photo.frame(0), rest_lm)
    assert rest_gap > 0.15 and rest_teeth > 100, (rest_gap, rest_teeth)  # the photo smiles, teeth showing
    speech, phones = synthesised(text, language)
    assert phones, "the fleet's own voices must report their phones"

    frames, meshes, track = render(photo, speech, phones, "closing")
    share, onsets = closed_share(meshes, phones)
    assert onsets >= 10
    assert share >= 0.85, f"lips shut at {share:.0%} of {onsets} m/b/p onsets"
    # The controls: the same speech with the phones' closures not drawn (the warp before it could
    # close a photo's parted lips) and without phones at all never shuts them.
    for mode in ("no_closing", "no_phones"):
        control, _ = closed_share(render(photo, speech, phones, mode)[1], phones)
        assert control < 0.2, (mode, control)

    # Open vowels reopen the mouth past the photo's own look, with the photo's own teeth in it.
    vowels = [k for k in range(len(frames)) if track.vowels[k] >= 0.6 and track.closure[k] == 0.0
              and meshes[k] is not None]
    assert len(vowels) >= 5, len(vowels)
    assert np.median([gap_over_width(meshes[k]) for k in vowels]) > rest_gap
    shown = [teeth(frames[k], meshes[k]) for k in vowels]
    assert np.mean([t >= 0.4 * rest_teeth for t in shown]) >= 0.9, (shown, rest_teeth)

    # The lips shut over the teeth: hardly a tooth pixel left where the photo showed them.
    shut = [k for k in range(len(frames)) if track.closure[k] == 1.0]
    assert shut and max(teeth(frames[k], photo.landmarks_at(k)) for k in shut) <= 0.15 * rest_teeth

    # The idle loop goes on underneath: down to below the eyes every frame is the avatar's own idle
    # frame (sway and blinks as when it is silent), and the head does sway over the utterance.
    eyes_down_to = int(rest_lm[EYE_L_LOWER + EYE_R_LOWER, 1].max()) + 4
    for k in range(0, len(frames), 7):
        assert np.array_equal(frames[k][:eyes_down_to], photo.frame(k)[:eyes_down_to]), k
    nose_x = [lm[NOSE_TIP, 0] for lm in meshes if lm is not None]
    assert np.ptp(nose_x) >= 1.0, np.ptp(nose_x)
