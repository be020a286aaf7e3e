"""`python -m core.mediaserver run|conf|check|stat`: the RTMP/HLS media server (nginx + nginx-rtmp).

The service pushes live talking-avatar streams to ``rtmp://127.0.0.1:<rtmp_port>/live/<key>``;
viewers pull the same URL over RTMP, or HLS at ``http://127.0.0.1:<http_port>/hls/<key>.m3u8``.

nginx runs in the foreground (``daemon off``) with its own prefix directory: the config, pid
file, lock file, logs, HLS fragments and every temp path live under it, so several instances
on different ports (the dev server and a test run) can run side by side and nothing is written
to /etc, /var or /run. ``run`` exec()s nginx, so the supervisor's signals reach nginx itself:
SIGTERM/SIGINT = fast shutdown, SIGQUIT = graceful shutdown.
"""

from __future__ import annotations

import argparse
import logging
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

RTMP_MODULE = "ngx_rtmp_module.so"
MODULE_DIRS = (Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules"))
DEFAULT_RTMP_PORT = 1935
DEFAULT_HTTP_PORT = 8080
APP = "live"  # rtmp://host:port/live/<stream key>
PUBLISH_CHECK_PATH = "/internal/media/publish"  # api/routers/publish.py
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# Characters that would break out of (or be interpolated inside) a quoted nginx argument.
_UNSAFE = set('"\'\\$;{}#') | {chr(c) for c in range(32)}


def find_rtmp_module() -> Path:
    """The nginx-rtmp dynamic module (Debian's libnginx-mod-rtmp)."""
    for directory in MODULE_DIRS:
        candidate = directory / RTMP_MODULE
        if candidate.is_file():
            return candidate
    for directory in MODULE_DIRS:
        if directory.is_dir():
            for candidate in sorted(directory.glob("*rtmp*.so")):
                return candidate
    raise FileNotFoundError(f"{RTMP_MODULE} not found in {', '.join(map(str, MODULE_DIRS))} "
                            "(apt-get install libnginx-mod-rtmp)")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if not found:
        raise FileNotFoundError("nginx not found (apt-get install nginx libnginx-mod-rtmp)")
    return found


def _q(path: Path | str) -> str:
    """A path as a quoted nginx argument; refuses paths nginx could not take literally."""
    text = str(path)
    if _UNSAFE & set(text):
        raise ValueError(f"path not usable in nginx.conf: {text!r}")
    return f'"{text}"'


def _user_directive() -> str:
    # Started as root, nginx would switch its worker to `nobody`, which cannot write the HLS
    # fragments into a private (0700) prefix. Keep the worker on the starting user instead; as
    # any other user nginx cannot switch and the directive is not needed (it would only warn).
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def _publish_rules(on_publish: str | None) -> str:
    """Who may publish. With `on_publish`, nginx-rtmp POSTs each publish (name, addr and the URL's
    arguments, e.g. the room's `secret`) to that URL and refuses it unless the answer is 2xx: only
    the fleet's stream workers hold the secrets. Without it (a bare server for tests and tools),
    anything on this host may publish."""
    rules = "allow publish 127.0.0.1;\n            deny publish all;\n            allow play all;"
    if on_publish is None:
        return rules
    if not re.match(r"^http://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9/_.-]*$", on_publish):
        raise ValueError(f"on_publish must be a plain http URL: {on_publish!r}")
    return f"{rules}\n            on_publish {on_publish};\n            notify_method post;"


def _stat_location(stat_secret: str | None) -> str:
    """/stat lists every stream key: with a secret, only requests carrying it in X-Media-Secret."""
    if stat_secret is None:
        return "location /stat {\n            rtmp_stat all;\n        }"
    if not re.match(r"^[A-Za-z0-9_-]{16,128}$", stat_secret):
        raise ValueError("stat_secret: 16 to 128 of A-Z a-z 0-9 _ -")
    return (f"location /stat {{\n            if ($http_x_media_secret != \"{stat_secret}\") {{ return 403; }}\n"
            f"            rtmp_stat all;\n        }}")


def render_nginx_conf(rtmp_port: int, http_port: int, prefix_dir: Path, *, module: Path | None = None,
                      log_to_stderr: bool = False, on_publish: str | None = None,
                      stat_secret: str | None = None) -> str:
    """A self-contained nginx.conf: RTMP ingest/playback on ``rtmp_port``, HLS + stat on ``http_port``.

    Everything nginx writes goes under ``prefix_dir`` (absolute paths only)."""
    for port in (rtmp_port, http_port):
        if not (0 < int(port) < 65536):
            raise ValueError(f"bad port {port}")
    if rtmp_port == http_port:
        raise ValueError("rtmp_port and http_port must differ")
    prefix = Path(prefix_dir).resolve()
    module = module or find_rtmp_module()
    temp = prefix / "temp"
    stderr_log = "error_log stderr warn;\n" if log_to_stderr else ""
    return f"""\
# Generated by core/mediaserver.py -- do not edit; regenerated on every start.
daemon off;
master_process on;
worker_processes 1;
{_user_directive()}pid {_q(prefix / "nginx.pid")};
lock_file {_q(prefix / "nginx.lock")};
error_log {_q(prefix / "logs" / "error.log")} warn;
{stderr_log}load_module {_q(module)};
# Unix sockets of rtmp_auto_push (off here) would default to /tmp.
rtmp_socket_dir {_q(prefix)};

events {{
    worker_connections 1024;
}}

rtmp {{
    # nginx-rtmp has its own access log (one line per publish/play session), by default the
    # compiled-in /var/log/nginx/access.log: keep it in the prefix.
    access_log {_q(prefix / "logs" / "rtmp-access.log")};

    server {{
        listen 127.0.0.1:{int(rtmp_port)};
        chunk_size 4096;

        application {APP} {{
            live on;
            record off;
            # Viewers start on a key frame, and get no audio before the first video frame.
            wait_key on;
            wait_video on;
            # Tell connected players when a publisher (re)starts or stops.
            play_restart on;
            drop_idle_publisher 10s;

            {_publish_rules(on_publish)}

            # <hls_path>/<stream key>.m3u8 + <stream key>-<n>.ts; cut on key frames only,
            # so fragments are max(hls_fragment, GOP) long.
            hls on;
            hls_path {_q(prefix / "hls")};
            hls_fragment 1s;
            hls_playlist_length 6s;
            hls_cleanup on;
        }}
    }}
}}

http {{
    access_log off;
    client_body_temp_path {_q(temp / "client_body")};
    proxy_temp_path {_q(temp / "proxy")};
    fastcgi_temp_path {_q(temp / "fastcgi")};
    uwsgi_temp_path {_q(temp / "uwsgi")};
    scgi_temp_path {_q(temp / "scgi")};
    default_type application/octet-stream;
    sendfile on;
    server_tokens off;

    server {{
        listen 127.0.0.1:{int(http_port)};

        # http://127.0.0.1:{int(http_port)}/hls/<stream key>.m3u8  ->  <prefix>/hls/<stream key>.m3u8
        location /hls/ {{
            types {{
                application/vnd.apple.mpegurl m3u8;
                video/mp2t ts;
            }}
            root {_q(prefix)};
            add_header Cache-Control no-cache;
            add_header Access-Control-Allow-Origin *;
        }}

        {_stat_location(stat_secret)}

        location = /healthz {{
            default_type text/plain;
            return 200 'ok';
        }}
    }}
}}
"""


@dataclass
class MediaServer:
    """nginx + nginx-rtmp under ``prefix`` (config, pid, logs, HLS, temp files)."""

    prefix: Path
    rtmp_port: int = DEFAULT_RTMP_PORT
    http_port: int = DEFAULT_HTTP_PORT
    log_to_stderr: bool = False
    on_publish: str | None = None  # the API's publish check; None: anything local may publish
    stat_secret: str | None = None  # None: /stat open to whoever reaches the port

    def __post_init__(self) -> None:
        self.prefix = Path(self.prefix).resolve()

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def hls_dir(self) -> Path:
        return self.prefix / "hls"

    @property
    def pid_path(self) -> Path:
        return self.prefix / "nginx.pid"

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{APP}/{key}"

    def hls_url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/hls/{key}.m3u8"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> Path:
        """Create the prefix tree and (re)write nginx.conf."""
        for sub in ("logs", "hls", *(f"temp/{t}" for t in TEMP_DIRS)):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_nginx_conf(self.rtmp_port, self.http_port, self.prefix,
                                                    log_to_stderr=self.log_to_stderr, on_publish=self.on_publish,
                                                    stat_secret=self.stat_secret))
        os.chmod(self.conf_path, 0o600)  # it holds the stat secret
        return self.conf_path

    def clean_hls(self) -> None:
        """Drop HLS files of an earlier run: a left-over playlist would be served as if live.
        Only before starting nginx (not while it runs on this prefix)."""
        if self.hls_dir.is_dir():
            for stale in self.hls_dir.iterdir():
                if stale.is_file() and stale.suffix in (".m3u8", ".ts"):
                    stale.unlink(missing_ok=True)

    def argv(self, error_log: str | None = None) -> list[str]:
        # -e (nginx >= 1.19.5): the log used before nginx.conf is read, so not even the start-up
        # messages go to the built-in default.
        return [nginx_binary(), "-p", f"{self.prefix}/", "-c", str(self.conf_path),
                "-e", error_log or str(self.error_log)]

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the written config (raises CalledProcessError with nginx's messages)."""
        return subprocess.run([*self.argv(error_log="stderr"), "-t", "-q"], capture_output=True, text=True,
                              check=True)

    def popen(self, **kwargs) -> subprocess.Popen:
        self.write_config()
        self.clean_hls()
        return subprocess.Popen(self.argv(), **kwargs)

    def kill_leftovers(self) -> list[int]:
        """SIGKILL nginx processes a killed master of this prefix left behind.

        A master killed with SIGKILL leaves its worker running, still listening on the ports, so
        a restarted nginx could not bind them. Its processes are found by the process group the
        dead master led (the pid in nginx.pid; the supervisor starts each program as a group
        leader) and are killed only if they are nginx."""
        try:
            old = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return []
        if _is_nginx(old):
            return []  # the master still runs: not ours to touch
        killed = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and _pgrp(proc) == old and _is_nginx(int(proc.name)):
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
                except ProcessLookupError:
                    pass
        return killed

    def run_foreground(self) -> None:
        """Replace this process with nginx (for the supervisor); never returns."""
        self.write_config()
        self.clean_hls()
        leftovers = self.kill_leftovers()
        if leftovers:
            logging.getLogger("mediaserver").warning("killed nginx processes %s left by a dead master", leftovers)
            time.sleep(0.2)  # let the kernel close their listening sockets
        argv = self.argv()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)

    def stat(self, timeout: float = 5.0) -> dict[str, dict]:
        return stat(self.http_port, timeout=timeout, secret=self.stat_secret)


def _pgrp(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _is_nginx(pid: int) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name == "nginx"
    except OSError:
        return False


def _int(node: ET.Element | None, tag: str, default: int = 0) -> int:
    text = node.findtext(tag) if node is not None else None
    try:
        return int(float(text)) if text not in (None, "") else default
    except ValueError:
        return default


def parse_stat(xml_text: str | bytes, app: str = APP) -> dict[str, dict]:
    """nginx-rtmp's /stat XML -> {stream: {publishing, clients, viewers, bw_in, time_ms, video}}.

    ``publishing`` is the ``<publishing/>`` flag of the stream (a publisher is connected);
    ``clients`` is nginx's ``nclients``, which counts the publisher too; ``viewers`` excludes it.
    ``video`` is ``{}`` until the publisher's metadata arrived."""
    root = ET.fromstring(xml_text)
    streams: dict[str, dict] = {}
    for application in root.iter("application"):
        if application.findtext("name") != app:
            continue
        for stream in application.iter("stream"):
            name = stream.findtext("name") or ""
            clients = stream.findall("client")
            publishers = [c for c in clients if c.find("publishing") is not None]
            video_node = stream.find("meta/video")
            video = {}
            if video_node is not None:
                fps = video_node.findtext("frame_rate")
                video = {"width": _int(video_node, "width"), "height": _int(video_node, "height"),
                         "frame_rate": float(fps) if fps else 0.0}
            streams[name] = {
                "publishing": stream.find("publishing") is not None,
                "clients": _int(stream, "nclients", len(clients)),
                "viewers": len(clients) - len(publishers),
                "bw_in": _int(stream, "bw_in"),
                "time_ms": _int(stream, "time"),
                "video": video,
            }
    return streams


def stat(http_port: int, host: str = "127.0.0.1", timeout: float = 5.0, app: str = APP,
         secret: str | None = None) -> dict[str, dict]:
    """Fetch ``/stat`` of a running media server and parse it (see :func:`parse_stat`)."""
    request = urllib.request.Request(f"http://{host}:{int(http_port)}/stat",
                                     headers={"X-Media-Secret": secret} if secret else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return parse_stat(resp.read(), app=app)


def from_settings(settings=None, log_to_stderr: bool = False) -> MediaServer:
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    from core.credentials import stat_secret

    return MediaServer(prefix=Path(settings.data_dir) / "media",
                       rtmp_port=int(getattr(settings, "rtmp_port", DEFAULT_RTMP_PORT)),
                       http_port=int(getattr(settings, "media_http_port", DEFAULT_HTTP_PORT)),
                       log_to_stderr=log_to_stderr, on_publish=on_publish_url(settings),
                       stat_secret=stat_secret(settings))


def on_publish_url(settings) -> str:
    """The API's publish check, as the media server on this host reaches it."""
    host = settings.api_host if settings.api_host not in ("0.0.0.0", "::", "", "localhost") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{int(settings.api_port)}{PUBLISH_CHECK_PATH}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.mediaserver")
    parser.add_argument("what", choices=["run", "conf", "check", "stat"],
                        help="run: exec nginx in the foreground; conf: print the config; "
                             "check: nginx -t; stat: print the live streams")
    args = parser.parse_args(argv)
    # The same config for every command (nginx's warnings also go to stderr, into its log file),
    # so `check` while the server runs rewrites nginx.conf with identical content.
    server = from_settings(log_to_stderr=True)
    if args.what == "run":
        from core.logs import setup_logging

        setup_logging()
        logging.getLogger("mediaserver").info("publish/play rtmp://127.0.0.1:%s/%s/<key>, HLS %s/hls/<key>.m3u8, stats %s/stat",
                                              server.rtmp_port, APP, server.http_base, server.http_base)
        server.run_foreground()
    if args.what == "conf":
        sys.stdout.write(render_nginx_conf(server.rtmp_port, server.http_port, server.prefix, log_to_stderr=True,
                                           on_publish=server.on_publish, stat_secret=server.stat_secret))
    elif args.what == "check":
        server.write_config()
        try:
            server.check()
        except subprocess.CalledProcessError as exc:
            sys.stderr.write(exc.stderr or exc.stdout or "")
            return 1
        print(f"{server.conf_path}: ok")
    else:
        import json

        print(json.dumps(server.stat(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
