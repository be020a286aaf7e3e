"""`python -m models assemble|verify|download [NAME ...]`: build, check or fetch the weights listed in the manifest."""

from __future__ import annotations

import argparse
import logging
import sys

from core.settings import get_settings
from models.weights import WeightsError, assemble, download, manifest, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models")
    parser.add_argument("action", choices=["assemble", "verify", "download"])
    parser.add_argument("names", nargs="*", help="models from models/manifest.json (default: all assemblable, "
                                                 "or for download all downloadable but the optional ones)")
    parser.add_argument("--timeout", type=float, default=10.0, help="download: seconds per connect or read")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models_dir = get_settings().models_dir
    entries = manifest()
    if unknown := [n for n in args.names if n not in entries]:
        parser.error(f"not in models/manifest.json: {', '.join(unknown)}")
    if args.action == "download":
        names = args.names or [n for n, e in entries.items() if e.get("urls") and not e.get("optional")]
    else:
        names = args.names or [n for n, e in entries.items() if e.get("assemble")]
    try:
        for name in names:
            if args.action == "download":
                path = download(models_dir, name, args.timeout)
            else:
                path = (assemble if args.action == "assemble" else verify)(models_dir, name)
            logging.info("%s ok: %s", name, path)
    except WeightsError as exc:
        logging.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
