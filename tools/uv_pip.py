"""`uv pip install ARGS...` into this interpreter's environment, from the package sources pip is configured
with: `make install` installs with uv (downloads and unpacks in parallel, about 4x faster than pip here)
but must get the wheels pip would (a machine's pip.conf files and PIP_* variables: local wheel folders,
extra indexes, constraints, its CA bundle), and uv reads no pip configuration.

    python tools/uv_pip.py UV_BINARY ARGS...

pip's merged configuration is read with `pip config list` (its files, then PIP_* variables, which win);
the install section wins over the global one, as in pip. `--index-strategy unsafe-best-match` is pip's
way of choosing among indexes (the best version over all of them), not uv's (the first index that has a
name); with it uv resolves the same versions as pip on this machine (`pip freeze` identical).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# Where a pip option is found, in the order pip lets it win (later wins).
SECTIONS = ("global", "install", ":env:")
# pip options that name package sources, and uv's flag for each (lists: one flag per value).
LIST_OPTIONS = {"find-links": "--find-links", "extra-index-url": "--extra-index-url", "constraint": "--constraint"}


def pip_config() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         check=True).stdout
    merged: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if not sep or section not in SECTIONS:
            continue
        rank = SECTIONS.index(section)
        if option not in merged or rank >= merged[option][0]:
            merged[option] = (rank, ast.literal_eval(value))
    return {option: value for option, (_, value) in merged.items()}


def uv_args(conf: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    args = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    for option, flag in LIST_OPTIONS.items():
        for value in conf.get(option, "").split():
            args += [flag, value]
    if conf.get("index-url"):
        args += ["--index-url", conf["index-url"]]
    if conf.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    for host in conf.get("trusted-host", "").split():
        args += ["--allow-insecure-host", host]
    if conf.get("cert"):
        env["SSL_CERT_FILE"] = conf["cert"]
    if conf.get("timeout") or conf.get("default-timeout"):
        env["UV_HTTP_TIMEOUT"] = str(int(float(conf.get("timeout") or conf["default-timeout"])))
    return args, env


def main() -> int:
    uv, *rest = sys.argv[1:]
    args, env = uv_args(pip_config())
    argv = [uv, "pip", "install", "--python", sys.executable, *args, *rest]
    return subprocess.run(argv, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main())
