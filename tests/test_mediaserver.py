"""The media server for real: nginx + nginx-rtmp on free loopback ports under a temporary prefix,
a test stream published with ffmpeg, pulled back over RTMP and HLS, and /stat read."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_until

from core.mediaserver import MediaServer, parse_stat, render_nginx_conf, stat

pytestmark = pytest.mark.timeout(120)

KEY = "teststream"
FPS = 25


def _need(binary: str) -> None:
    from shutil import which

    if not which(binary):
        pytest.skip(f"{binary} is not installed")


def _stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL: nginx does a fast shutdown on SIGTERM; an ffmpeg blocked on a
    stalled RTMP read may ignore it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _get(url: str, timeout: float = 5) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, b""


def _healthy(server: MediaServer) -> bool:
    return _get(f"{server.http_base}/healthz", timeout=2)[0] == 200


def _start(server: MediaServer, log: Path) -> subprocess.Popen:
    proc = server.popen(stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or _healthy(server), 10, what="nginx up")
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}")
    except AssertionError as exc:
        _stop(proc)
        logs = log.read_text(errors="replace") + (server.error_log.read_text(errors="replace")
                                                  if server.error_log.exists() else "")
        raise AssertionError(f"{exc}\n{logs[-3000:]}") from None
    return proc


def _default_paths() -> dict[str, tuple | None]:
    """The compiled-in paths of this nginx (logs, pid, lock, temp dirs) and their state."""
    info = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    paths = {m for m in re.findall(r"--[\w-]*path=(/\S+)", info) if not m.startswith("/etc/")}
    paths = {p for p in paths if not p.endswith("/modules")}
    state = {}
    for path in sorted(paths):
        try:
            st = os.stat(path)
            state[path] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            state[path] = None
    return state


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    _need("nginx")
    prefix = tmp_path_factory.mktemp("media")
    server = MediaServer(prefix=prefix, rtmp_port=free_port(), http_port=free_port())
    server.defaults_before = _default_paths()
    proc = _start(server, prefix / "nginx.stdout")
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def publisher(media):
    """A 320x240 25 fps test picture with a 440 Hz tone, pushed in real time (-re).

    Long enough for every test of the module; stopped at teardown in any case."""
    _need("ffmpeg")
    log = media.prefix / "publisher.log"
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "warning", "-re",
         "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", "30", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(2 * FPS),
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", media.rtmp_url(KEY)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)
    try:
        def publishing():
            if proc.poll() is not None:
                raise AssertionError(f"publisher exited: {log.read_text(errors='replace')[-2000:]}")
            return stat(media.http_port).get(KEY, {}).get("publishing")

        wait_until(publishing, 10, what="the publisher in /stat")
        yield proc
    finally:
        _stop(proc)


def test_config_passes_nginx_t(tmp_path):
    _need("nginx")
    server = MediaServer(prefix=tmp_path / "prefix", rtmp_port=free_port(), http_port=free_port())
    server.write_config()
    result = server.check()
    assert result.returncode == 0, result.stderr
    # Also the plain `nginx -t -p <prefix> -c <conf>` form.
    subprocess.run(["nginx", "-t", "-q", "-p", f"{server.prefix}/", "-c", str(server.conf_path), "-e", "stderr"],
                   check=True, capture_output=True)
    conf = server.conf_path.read_text()
    for needle in ("daemon off;", "master_process on;", "worker_processes 1;", "access_log off;",
                   f"listen 127.0.0.1:{server.rtmp_port};", f"listen 127.0.0.1:{server.http_port};",
                   "load_module ", "allow publish 127.0.0.1;", "deny publish all;", "rtmp_stat all;"):
        assert needle in conf, needle
    # Every path nginx writes is inside the prefix; only the module is read from outside.
    paths = re.findall(r'^\s*(\w+)\s+"(/[^"]*)"', conf, flags=re.M)
    assert {d for d, _ in paths} >= {"pid", "lock_file", "error_log", "hls_path", "client_body_temp_path",
                                     "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path",
                                     "scgi_temp_path", "root"}
    for directive, path in paths:
        if directive != "load_module":
            assert Path(path).is_relative_to(server.prefix), (directive, path)
    assert not re.search(r"listen\s+(?!127\.0\.0\.1:)", conf)


def test_render_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        render_nginx_conf(1935, 1935, tmp_path)
    with pytest.raises(ValueError):
        render_nginx_conf(1935, 8080, tmp_path / 'a";b')


def test_two_instances_side_by_side(media, tmp_path):
    other = MediaServer(prefix=tmp_path / "second", rtmp_port=free_port(), http_port=free_port())
    proc = _start(other, tmp_path / "second.log")
    try:
        assert _healthy(media) and _healthy(other)
        assert int(other.pid_path.read_text()) == proc.pid
        assert int(media.pid_path.read_text()) != proc.pid
        assert stat(other.http_port) == {}
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert _healthy(media)


def test_stat_shows_the_publisher(media, publisher):
    def described():
        entry = stat(media.http_port).get(KEY)
        return entry if entry and entry["video"] else None

    entry = wait_until(described, 10, what="stream metadata in /stat")
    assert entry["publishing"] is True
    assert entry["clients"] >= 1  # nclients counts the publisher
    assert entry["video"] == {"width": 320, "height": 240, "frame_rate": float(FPS)}
    assert entry["time_ms"] > 0
    assert stat(media.http_port).keys() == {KEY}  # no other stream appears by itself


def test_rtmp_viewer_gets_live_frames(media, publisher):
    """A viewer pulls 3 s of video: it starts on a key frame (wait_key) and gets ~25 frames per
    second of stream time, delivered in real time; while it plays, /stat counts it."""
    start = time.monotonic()
    viewer = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-i", media.rtmp_url(KEY),
         "-t", "3", "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: stat(media.http_port).get(KEY, {}).get("viewers", 0) >= 1 or viewer.poll() is not None,
                   10, what="the viewer in /stat")
        out, err = viewer.communicate(timeout=20)
    finally:
        _stop(viewer)
    elapsed = time.monotonic() - start
    assert viewer.returncode == 0, err.decode(errors="replace")[-2000:]
    text = out.decode()
    assert "#codec_id 0: h264" in text and "#dimensions 0: 320x240" in text
    assert "#tb 0: 1/1000" in text
    packets = [line.split(",") for line in text.splitlines() if line and not line.startswith("#")]
    assert len(packets) >= 2 * FPS, f"only {len(packets)} video frames"
    assert "F=" not in packets[0][-1], "the viewer did not start on a key frame"
    dts = [int(p[1]) for p in packets]
    assert all(b > a for a, b in zip(dts, dts[1:])), "timestamps not increasing"
    fps = (len(dts) - 1) / ((dts[-1] - dts[0]) / 1000)
    assert abs(fps - FPS) < 1.5, f"{fps:.1f} fps"
    # Live, not a burst of buffered frames: 3 s of stream took about 3 s to arrive.
    assert elapsed >= 2.5, f"3 s of stream arrived in {elapsed:.1f} s"


def test_hls_playlist_and_segments(media, publisher):
    url = media.hls_url(KEY)

    def playlist():
        status, headers, body = _get(url)
        return (headers, body.decode()) if status == 200 and ".ts" in body.decode() else None

    headers, text = wait_until(playlist, 15, interval=0.25, what="the HLS playlist")
    assert headers.get("Content-Type", "").startswith("application/vnd.apple.mpegurl")
    assert headers.get("Cache-Control") == "no-cache"
    assert headers.get("Access-Control-Allow-Origin") == "*"
    assert text.startswith("#EXTM3U")
    segments = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert segments and all(s.endswith(".ts") for s in segments)
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+)", text)]
    assert len(durations) == len(segments) and all(0 < d <= 3 for d in durations)
    for segment in segments:
        status, seg_headers, body = _get(url.rsplit("/", 1)[0] + "/" + segment)
        assert status == 200, segment
        assert seg_headers.get("Content-Type") == "video/mp2t"
        assert len(body) > 1000 and len(body) % 188 == 0 and body[0] == 0x47  # MPEG-TS packets
    assert (media.hls_dir / f"{KEY}.m3u8").is_file()
    # The playlist as a player sees it: H.264 320x240 and AAC.
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                            "-of", "compact", url], capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    assert "codec_name=h264|width=320|height=240" in probe.stdout
    assert "codec_name=aac" in probe.stdout
    assert _get(f"{media.http_base}/hls/nosuchstream.m3u8")[0] == 404


def test_nothing_written_outside_the_prefix(media, publisher):
    """After publishing, playing and HLS (the tests above), nginx's compiled-in log, pid, lock and
    temp paths are untouched; the sessions are logged in the prefix instead."""
    assert _default_paths() == media.defaults_before
    assert (media.prefix / "logs" / "rtmp-access.log").is_file()  # one line per finished session


def test_cli_run_execs_nginx_and_stops_on_sigterm(tmp_path):
    """`python -m core.mediaserver run` becomes nginx (same pid), so SIGTERM from the supervisor stops it."""
    _need("nginx")
    from core.settings import Settings

    if not {"rtmp_port", "media_http_port"} <= set(Settings.model_fields):
        pytest.skip("Settings has no rtmp_port/media_http_port yet: the CLI would take the fixed default ports")
    rtmp_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_")}
    env.update(MTL_DATA_DIR=str(tmp_path), MTL_RTMP_PORT=str(rtmp_port), MTL_MEDIA_HTTP_PORT=str(http_port))
    proc = subprocess.Popen([sys.executable, "-m", "core.mediaserver", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = MediaServer(prefix=tmp_path / "media", rtmp_port=rtmp_port, http_port=http_port)
    try:
        wait_until(lambda: _healthy(server), 10, what="nginx from the CLI")
        assert int(server.pid_path.read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not _healthy(server)
    finally:
        _stop(proc)


def test_parse_stat_counts_publisher_and_viewers():
    xml = """<?xml version="1.0" encoding="utf-8" ?><rtmp><server><application><name>live</name><live>
      <stream><name>a</name><time>1500</time><bw_in>1000</bw_in>
        <client><id>1</id><publishing/><active/></client><client><id>2</id><active/></client>
        <meta><video><width>640</width><height>360</height><frame_rate>25</frame_rate></video></meta>
        <nclients>2</nclients><publishing/><active/></stream>
      <stream><name>b</name><time>10</time><bw_in>0</bw_in><client><id>3</id></client><meta/>
        <nclients>1</nclients></stream>
      <nclients>3</nclients></live></application>
      <application><name>other</name><live><stream><name>c</name><nclients>0</nclients></stream></live>
      </application></server></rtmp>"""
    assert parse_stat(xml) == {
        "a": {"publishing": True, "clients": 2, "viewers": 1, "bw_in": 1000, "time_ms": 1500,
              "video": {"width": 640, "height": 360, "frame_rate": 25.0}},
        "b": {"publishing": False, "clients": 1, "viewers": 1, "bw_in": 0, "time_ms": 10, "video": {}},
    }
