"""Live frames straight from the template JPEGs in the encoder's YUV (avatars/yuv.py): the picture
the stream encodes is the one the BGR route gave, within rounding, and only drawn pixels change."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatars.demo import write_demo_portrait
from avatars.store import Avatar
from avatars import yuv
from core.live import to_video_frame


def _planes(frame) -> list[np.ndarray]:
    return [yuv.plane(frame, i).astype(int) for i in range(3)]


@pytest.fixture
def template(tmp_path) -> Avatar:
    """A 720x1280 two-frame avatar whose frames are JPEGs as avatar preparation writes them (quality 92)."""
    portrait = cv2.imread(str(write_demo_portrait(tmp_path / "p.png")))
    frame = cv2.copyMakeBorder(cv2.resize(portrait, (720, 720)), 280, 280, 0, 0, cv2.BORDER_REFLECT)
    (tmp_path / "frames").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "frames" / f"{i:06d}.jpg"), np.roll(frame, 3 * i, axis=1),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
    (tmp_path / "avatar.json").write_text(json.dumps({"frames": 2, "width": 720, "height": 1280}))
    for name, shape in (("landmarks", (2, 478, 2)), ("boxes", (2, 4)), ("masks", (2, 8, 8))):
        np.save(tmp_path / f"{name}.npy", np.zeros(shape, np.float32))
    return Avatar(tmp_path)


def test_template_frames_decode_to_what_the_bgr_route_encoded(template):
    decoder = yuv.TemplateYuv()
    for cycle in (0, 1, 2, 3):  # the ping-pong cycle: 2 and 3 are frames 1 and 0 again
        got = decoder.frame(template, cycle)
        assert got.format.name == "yuv420p" and (got.width, got.height) == (720, 1280)
        want = to_video_frame(template.frame(cycle), 0)
        for a, b in zip(_planes(got), _planes(want)):
            # Rounding; a few more levels where a saturated colour was clipped on its way through BGR.
            assert np.abs(a - b).mean() < 1.0 and np.percentile(np.abs(a - b), 99.9) <= 4


def test_drawing_a_window_changes_only_the_drawn_pixels(template):
    frame = yuv.TemplateYuv().frame(template, 0)
    before = _planes(frame)
    win = yuv.window((301, 611, 457, 733), 720, 1280)
    assert all(v % 2 == 0 for v in win) and win[0] <= 301 - 8 and win[3] >= 733 + 8
    region = yuv.read_bgr(frame, win)
    drawn = np.zeros(region.shape[:2], np.uint8)
    cv2.circle(drawn, (90, 70), 40, 255, -1)
    region[drawn > 0] = (40, 40, 200)
    yuv.write_bgr(frame, win, region, drawn > 0)
    after = _planes(frame)
    x1, y1, x2, y2 = win
    changed_y = np.zeros((1280, 720), bool)
    changed_y[y1:y2, x1:x2] = drawn > 0
    assert np.array_equal(after[0][~changed_y], before[0][~changed_y])
    # Chroma covers 2x2 pixels: only blocks holding a drawn pixel change.
    block = changed_y.reshape(640, 2, 360, 2).any(axis=(1, 3))
    for i in (1, 2):
        assert np.array_equal(after[i][~block], before[i][~block])
    assert np.abs(after[2][block] - before[2][block]).mean() > 20  # Cr: the disc is red on a pale face
    # Inside the disc: the colour drawn, as the full-frame conversion of the BGR route gives it.
    whole = template.frame(0)
    whole[y1:y2, x1:x2][drawn > 0] = (40, 40, 200)
    want = _planes(to_video_frame(whole, 0))
    inner = cv2.erode(drawn, np.ones((5, 5), np.uint8)) > 0
    inside = np.zeros((1280, 720), bool)
    inside[y1:y2, x1:x2] = inner
    assert np.abs(after[0][inside] - want[0][inside]).max() <= 1


def test_a_template_not_stored_as_420_takes_the_bgr_route(template):
    path = template.path / "frames" / "000000.jpg"
    cv2.imwrite(str(path), template.frame(0), [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    assert yuv.TemplateYuv().frame(template, 0) is None


def test_cached_frames_are_the_decoded_frames_and_stay_within_the_budget(template):
    one = 720 * 1280 * 3 // 2
    cache = yuv.FrameCache(budget_bytes=one + one // 2)  # room for one frame, not two
    cached, plain = yuv.TemplateYuv(cache), yuv.TemplateYuv(yuv.FrameCache(0))
    for cycle in (0, 1, 2, 3, 0, 3):
        got, want = cached.frame(template, cycle), plain.frame(template, cycle)
        assert all(np.array_equal(a, b) for a, b in zip(_planes(got), _planes(want))), cycle
        assert cache.used == one  # frame 0 kept; frame 1 decoded every time, never stored
    # Each call gives a frame of its own: drawing on it leaves the cache as it was.
    drawn = cached.frame(template, 0)
    yuv.plane(drawn, 0)[:] = 0
    assert np.array_equal(_planes(cached.frame(template, 0))[0], _planes(plain.frame(template, 0))[0])


def test_an_avatar_no_room_reads_gives_its_place_to_another(template, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("frames", "avatar.json", "landmarks.npy", "boxes.npy", "masks.npy"):
        (other / name).symlink_to(template.path / name)
    cache = yuv.FrameCache(budget_bytes=720 * 1280 * 3 // 2, idle_s=1.0)
    decoder = yuv.TemplateYuv(cache)
    decoder.frame(template, 0)
    decoder.frame(Avatar(other), 0)
    assert cache.holds((str(template.path), "")) and not cache.holds((str(other), ""))
    time.sleep(1.1)
    decoder.frame(Avatar(other), 0)
    assert cache.holds((str(other), "")) and not cache.holds((str(template.path), ""))
    assert cache.used == 720 * 1280 * 3 // 2


def test_warming_decodes_the_whole_template_into_the_shared_cache(template):
    from conftest import wait_until

    try:
        cache = yuv.configure_cache(64)
        yuv.warm_cache(template)
        wait_until(lambda: cache.used == 2 * 720 * 1280 * 3 // 2, 10, what="both frames cached")
        decoded = yuv.TemplateYuv(yuv.FrameCache(0)).frame(template, 1)
        assert np.array_equal(_planes(yuv.TemplateYuv().frame(template, 1))[2], _planes(decoded)[2])
    finally:
        yuv.configure_cache(0)
