"""`python -m avatars demo`: prepare the bundled demo avatar (cached; instant when already built)."""

from __future__ import annotations

import argparse
import logging
import sys

from avatars.demo import write_demo_portrait
from avatars.prepare import prepare
from avatars.store import avatar_dir
from core.logs import setup_logging
from core.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatars")
    parser.add_argument("action", choices=["demo"])
    parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level)
    portrait = write_demo_portrait(settings.kind_dir("uploads") / "demo-portrait.png")
    manifest = prepare(portrait, avatar_dir(settings.data_dir, settings.demo_avatar_id))
    from avatars.idle_loop import load_idle_loop
    from avatars.store import Avatar

    load_idle_loop(Avatar.open(settings.data_dir, settings.demo_avatar_id), settings)
    logging.getLogger("avatars").info("demo avatar %r ready (%d frames, %s)", manifest["id"], manifest["frames"],
                                      "cached" if manifest["reused"] else f"built in {manifest['prepare_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
