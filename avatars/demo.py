"""The bundled demo avatar: scikit-image's public-domain astronaut portrait, framed head and shoulders."""

from __future__ import annotations

from pathlib import Path

import cv2


def write_demo_portrait(path: Path) -> Path:
    from skimage import data

    rgb = data.astronaut()
    # Head and shoulders, upscaled so the face is large enough for a live-room layout.
    crop = rgb[0:340, 55:395]
    bgr = cv2.cvtColor(cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), bgr)
    return path
