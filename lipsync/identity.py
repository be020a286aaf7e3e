"""Is the speech sample's presenter the template's? Checked before enrollment harvests a mouth.

A presenter is summed up from a handful of frames (the median over them, so a blink or a turn of
the head does not count) by what speech does not change:

- geometry: eyes, brows, nose and the upper face oval from the face mesh, normalised by the
  inter-ocular distance (translation, rotation and scale removed);
- the lips' colour against the skin around them: the renderer corrects lighting by shifting the
  pasted mouth's colour to the frame's skin on the patch rim (lipsync/exemplar.py), so what
  survives that correction is the lip-to-skin contrast, compared in CIE Lab;
- the texture of the chin and cheeks (stubble, a beard) at a scale set by the inter-ocular distance.

Each component is divided by a tolerance and the largest ratio is the distance: 1.0 is the bound.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from avatars.face import FaceMesher
from core.media import MediaError, iter_video_frames, probe, video_size

log = logging.getLogger(__name__)

# Speech leaves these alone: eye corners and lids, brows, nose bridge, wings and tip, upper face oval.
RIGID = [33, 133, 159, 145, 362, 263, 386, 374, 70, 105, 107, 336, 334, 300, 168, 6, 197, 4, 98, 327, 2,
         10, 109, 338, 234, 454, 127, 356]
# 1.25 x the largest same-person difference on bench.identity's tuning pairs (avatar-sun, real-talk-2,
# long-cameron's four framings, the demo portrait): there every other-person pair scored >= 1.47. On the
# held-out pairs (real-talk-5, pd-reagan, pd-tedlieu, the portrait speaking): 4/4 same-person pairs
# accepted (<= 0.56), 78/80 other-person pairs refused (bench/figures/issue-19/identity.json). Geometry alone
# does not tell two grey-suited men apart; lips, skin and texture tell a woman from a man.
TOLERANCE = {"geometry": 0.024, "lip_contrast": 15.0, "texture": 0.6}
CANON_IOD = 64.0  # px between the outer eye corners in the texture crop


@dataclass(frozen=True)
class Presenter:
    geometry: np.ndarray  # [len(RIGID), 3] in inter-ocular units, facing the camera
    lip_contrast: np.ndarray  # Lab of the lips minus Lab of the skin around them
    texture: float  # log high-frequency energy of chin and cheeks (relative to their brightness)
    frames: int

    def to_json(self) -> dict:
        return {"geometry": np.round(self.geometry, 5).tolist(), "lip_contrast": np.round(self.lip_contrast, 3).tolist(),
                "texture": round(self.texture, 5), "frames": self.frames}

    @classmethod
    def from_json(cls, data: dict) -> "Presenter":
        return cls(geometry=np.asarray(data["geometry"], np.float64), lip_contrast=np.asarray(data["lip_contrast"], np.float64),
                   texture=float(data["texture"]), frames=int(data["frames"]))


def _procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """`src` [n,3] rotated (no scaling: both are in inter-ocular units) onto `dst` [n,3], centred."""
    s, d = src - src.mean(axis=0), dst - dst.mean(axis=0)
    u, _sig, vt = np.linalg.svd(d.T @ s)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    return s @ (u @ np.diag([1.0, 1.0, sign]) @ vt).T


def _normalised(lm3: np.ndarray) -> np.ndarray:
    """The rigid points in 3D, centred and in inter-ocular units, turned to face the camera: the
    head's yaw, pitch and roll removed (a presenter filmed from another angle is the same shape)."""
    pts = lm3[RIGID].astype(np.float64)
    iod = max(1e-6, float(np.linalg.norm(lm3[263] - lm3[33])))
    pts = (pts - pts.mean(axis=0)) / iod
    # A frontal, level frame of reference: x from eye to eye, z from the nose tip's side.
    x = pts[RIGID.index(263)] - pts[RIGID.index(33)]
    x /= np.linalg.norm(x)
    up = pts[RIGID.index(168)] - pts[RIGID.index(2)]
    z = np.cross(x, up)
    z /= max(1e-9, np.linalg.norm(z))
    y = np.cross(z, x)
    return pts @ np.stack([x, y, z]).T


def _lab(bgr: np.ndarray) -> np.ndarray:
    pixel = np.clip(bgr, 0, 255).astype(np.uint8).reshape(1, 1, 3)
    lab = cv2.cvtColor(pixel, cv2.COLOR_BGR2LAB).astype(np.float32).reshape(3)
    return np.array([lab[0] * 100.0 / 255.0, lab[1] - 128.0, lab[2] - 128.0], np.float32)


def _texture(frame: np.ndarray, lm: np.ndarray) -> float:
    """High-frequency energy of the lower face beside and below the mouth, at a fixed face scale."""
    iod = max(1e-6, float(np.linalg.norm(lm[263] - lm[33])))
    scale = CANON_IOD / iod
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    pts = lm * scale
    energies = []
    # Chin (between lower lip and chin) and the two cheeks beside the mouth corners.
    for centre in ((pts[17] + pts[152]) / 2.0, pts[61] + (pts[61] - pts[291]) * 0.35,
                   pts[291] + (pts[291] - pts[61]) * 0.35):
        x, y = int(centre[0]), int(centre[1])
        r = int(0.12 * CANON_IOD)
        crop = gray[max(0, y - r):y + r, max(0, x - r):x + r]
        if crop.size < 16:
            continue
        high = crop - cv2.GaussianBlur(crop, (0, 0), 1.5)
        energies.append(float(high.std()) / max(8.0, float(crop.mean())))
    return float(np.log(np.median(energies) + 1e-4)) if energies else 0.0


def _sample(frame: np.ndarray, lm3: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from lipsync.warp import geometry, sample_palette

    lm = lm3[:, :2]
    lip, skin = sample_palette(frame, lm, geometry(lm, frame.shape))
    return _normalised(lm3), _lab(lip) - _lab(skin), _texture(frame, lm)


def presenter_of(frames, max_frames: int = 10) -> Presenter | None:
    """The presenter in `frames` (an iterable of BGR frames); None when no face is found."""
    mesher = FaceMesher(video=False)
    geo, lips, tex = [], [], []
    try:
        for frame in frames:
            lm = mesher.landmarks3d(frame)
            if lm is not None:
                g, l, t = _sample(frame, lm)
                geo.append(g), lips.append(l), tex.append(t)
            if len(geo) >= max_frames:
                break
    finally:
        mesher.close()
    if not geo:
        return None
    return Presenter(geometry=np.median(np.stack(geo), axis=0), lip_contrast=np.median(np.stack(lips), axis=0),
                     texture=float(np.median(tex)), frames=len(geo))


def spread_frames(path: Path, count: int = 10, max_side: int = 640):
    """About `count` frames spread over a video (or the picture itself), scaled to `max_side`."""
    info = probe(path)
    w, h = video_size(path)
    scale = min(1.0, max_side / max(w, h))
    w, h = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
    if info.still_image or not info.duration_s:
        data = np.fromfile(str(path), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is not None:
            yield cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return
    every = max(1, int(info.duration_s * 5 / count))  # decoded at 5 fps, every n-th kept
    for i, frame in enumerate(iter_video_frames(path, w, h, 5)):
        if i % every == every // 2:
            yield frame


def presenter_of_file(path: Path, count: int = 10) -> Presenter | None:
    # Read once per file version: the person check before enrollment and the enrollment itself
    # (which keeps the sample's presenter) read the same sample in the same job.
    try:
        st = path.stat()
    except OSError:
        return None
    return _presenter_of_file(str(path), st.st_size, st.st_mtime_ns, count)


@lru_cache(maxsize=16)
def _presenter_of_file(path: str, _size: int, _mtime_ns: int, count: int) -> Presenter | None:
    try:
        return presenter_of(spread_frames(Path(path), count), max_frames=count)
    except MediaError as exc:
        log.info("no presenter read from %s: %s", Path(path).name, exc)
        return None


PRESENTER_FILE = "presenter.json"


def save_presenter(path: Path, presenter: Presenter | None, **tags) -> None:
    if presenter is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**presenter.to_json(), **tags}))
        tmp.replace(path)


def load_presenter(path: Path, **tags) -> Presenter | None:
    """The presenter kept at `path`, if it was kept with these `tags` (e.g. the template's digest)."""
    try:
        data = json.loads(path.read_text())
        if any(data.get(k) != v for k, v in tags.items()):
            return None
        return Presenter.from_json(data)
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError, TypeError):
        return None


def presenter_of_avatar(avatar, count: int = 10, max_side: int = 640) -> Presenter | None:
    """The template's presenter, read once and kept with the avatar (frames spread over its clip),
    tagged with the template's digest so a new template under the same id is read again."""
    path, tag = avatar.path / PRESENTER_FILE, {"source_sha256": avatar.manifest.get("source_sha256")}
    cached = load_presenter(path, **tag)
    if cached is not None:
        return cached
    scale = min(1.0, max_side / max(avatar.width, avatar.height))
    picks = np.linspace(0, avatar.n - 1, min(count, avatar.n)).astype(int)
    frames = (cv2.resize(avatar.frame(int(i)), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for i in picks)
    presenter = presenter_of(frames, max_frames=count)
    save_presenter(path, presenter, **tag)
    return presenter


def distance(a: Presenter, b: Presenter) -> dict:
    """Each component over its tolerance, and `score`, the largest of them (same person: below 1)."""
    parts = {
        "geometry": float(np.sqrt(((_procrustes(a.geometry, b.geometry) - (b.geometry - b.geometry.mean(axis=0)))
                                   ** 2).sum(axis=1).mean())),
        "lip_contrast": float(np.linalg.norm(a.lip_contrast - b.lip_contrast)),
        "texture": abs(a.texture - b.texture),
    }
    ratios = {k: v / TOLERANCE[k] for k, v in parts.items()}
    return {**{k: round(v, 4) for k, v in parts.items()}, "score": round(max(ratios.values()), 3),
            "worst": max(ratios, key=ratios.get)}


def check_same_person(template: Path, sample: Path) -> dict | None:
    """Refuse a speech sample whose presenter is not the template's (AvatarError
    `sample_other_person`); the comparison, or None when either shows no face (the sample's own
    checks then say why)."""
    from avatars.prepare import AvatarError

    ours, theirs = presenter_of_file(template), presenter_of_file(sample)
    if ours is None or theirs is None:
        return None
    verdict = distance(ours, theirs)
    log.info("person check %s vs %s: %s", template.name, sample.name, verdict)
    if verdict["score"] > 1.0:
        raise AvatarError("sample_other_person", "the speech sample shows another person than the avatar's "
                          "template; use a clip of the same presenter talking", **verdict)
    return verdict
