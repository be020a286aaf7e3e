"""`python -m core.fleet run|redis`: start the whole fleet from the Procfile, or the own Redis.

Redis runs with the append-only file on, its data under results/redis, bound to loopback,
so queued jobs survive a restart of Redis or of the machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from urllib.parse import urlparse

from core.logs import setup_logging
from core.settings import PROJECT_ROOT, Settings, get_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def redis_argv(settings: Settings, port: int | None = None, data_dir=None) -> list[str]:
    port = port or urlparse(settings.redis_url).port or settings.redis_port
    data_dir = data_dir or settings.kind_dir("redis")
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
            "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no"]
    if settings.redis_password:
        argv += ["--requirepass", settings.redis_password]
    return argv


def run_redis(settings: Settings) -> None:
    host = urlparse(settings.redis_url).hostname
    if host not in LOOPBACK:
        # An external Redis is configured: nothing to start, but honcho stops the fleet when any
        # process exits, so stay up quietly.
        logging.getLogger("fleet").info("using external Redis at %s; not starting one", host)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return
    os.execv(redis_argv(settings)[0], redis_argv(settings))


def banner(settings: Settings) -> str:
    base = settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}"
    return "\n".join([
        "musetalk-live is starting (Ctrl-C stops everything)",
        f"  API           {base}",
        f"  OpenAPI docs  {base}/docs",
        f"  readiness     {base}/readyz",
        f"  media server  rtmp://{settings.media_public_host}:{settings.rtmp_port}/live/<stream_key>  "
        f"HLS http://{settings.media_public_host}:{settings.media_http_port}/hls/<stream_key>.m3u8",
        "Try:",
        f"  curl -s '{base}/tts?msg=%E5%A4%A7%E5%AE%B6%E5%A5%BD%EF%BC%8C%E6%AC%A2%E8%BF%8E%E6%9D%A5%E5%88%B0%E7%9B%B4%E6%92%AD%E9%97%B4%E3%80%82'",
        f"  curl -s -X POST {base}/v1/tts -H 'Content-Type: application/json' "
        "-d '{\"text\": \"Hello, welcome to the live room.\"}'",
        "  then: curl -s " + base + "/v1/jobs/<job_id>   and   curl -sO " + base + "/tests/<id>.wav",
        f"  a live room:  curl -s '{base}/create/zbj?username=demo'   then   curl -s {base}/v1/rooms",
        "  (each room lists its rtmp/hls play URLs; `ffplay <rtmp url>` or open the .m3u8 in a player)",
        "",
    ])


def run_fleet(settings: Settings) -> None:
    sys.stdout.write(banner(settings) + "\n")  # the command's own output, for the operator
    sys.stdout.flush()
    honcho = os.path.join(os.path.dirname(sys.executable), "honcho")
    concurrency = (f"tts={settings.tts_workers},asr={settings.asr_workers},avatar={settings.avatar_workers},"
                   f"lipsync={settings.lipsync_workers},stream={settings.stream_workers},media=1")
    os.chdir(PROJECT_ROOT)
    os.execv(honcho, [honcho, "start", "-f", str(PROJECT_ROOT / "Procfile"), "-c", concurrency])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.fleet")
    parser.add_argument("what", choices=["run", "redis", "banner"])
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level)
    if args.what == "redis":
        run_redis(settings)
    elif args.what == "banner":
        sys.stdout.write(banner(settings) + "\n")
    else:
        run_fleet(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
