"""`python -m api [--fd N]`: serve the API with uvicorn on the configured host/port.

With ``--fd`` the process serves a listening socket it inherited (supervisord's fcgi-program
passes one socket to every API process as fd 0) and runs a single worker: the supervisor scales
the processes, and the socket stays open while one of them restarts.
"""

import argparse
import socket

import uvicorn

from api.server import LOOP, config
from core.logs import setup_logging
from core.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api")
    parser.add_argument("--fd", type=int, help="serve this inherited listening socket")
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level)
    # Live HTTP-FLV responses never end by themselves: on shutdown they are cut after 3 s.
    options = dict(factory=True, log_level=settings.log_level.lower(), access_log=False,
                   timeout_graceful_shutdown=3)
    if args.fd is None:
        uvicorn.run("api.main:create_app", host=settings.api_host, port=settings.api_port,
                    workers=settings.api_processes, loop=LOOP, **options)
        return
    # socket.socket(fileno=) detects the family (uvicorn's own --fd assumes a unix socket).
    sock = socket.socket(fileno=args.fd)
    uvicorn.Server(config("api.main:create_app", **options)).run(sockets=[sock])


if __name__ == "__main__":
    main()
