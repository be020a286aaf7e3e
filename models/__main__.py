"""`python -m models assemble|verify [NAME ...]`: build and check the weights listed in the manifest."""

from __future__ import annotations

import argparse
import logging
import sys

from core.settings import get_settings
from models.weights import WeightsError, assemble, manifest, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models")
    parser.add_argument("action", choices=["assemble", "verify"])
    parser.add_argument("names", nargs="*", help="models from models/manifest.json (default: all assemblable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models_dir = get_settings().models_dir
    names = args.names or [n for n, e in manifest().items() if e.get("assemble")]
    try:
        for name in names:
            path = (assemble if args.action == "assemble" else verify)(models_dir, name)
            logging.info("%s ok: %s", name, path)
    except WeightsError as exc:
        logging.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
