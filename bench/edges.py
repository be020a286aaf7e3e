"""`python -m bench.edges`: what a 200 MB multipart body sent with no key costs the API (issue 17).

Starts its own redis-server and one API process (`python -m api`) with keys set, on free loopback
ports and a temporary data directory; sends each upload/JSON route a 200 MB multipart body over a
raw socket without a key, and reports per route: the status, the seconds to the answer, the bytes
the client got to send, the API's RSS before and after and its peak growth while the request ran,
the peak size of the files it held open under its data and temp directories (the multipart
parser's spool files are unnamed), and what was left under them afterwards. Target: RSS growth < 20 MB, nothing on disk.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import emit

ROUTES = ("/v1/tts", "/v1/rooms", "/v1/files", "/v1/avatars")
SIZE = 200 * 1024 * 1024
CHUNK = 256 * 1024
KEY = "bench-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0



def _disk(root: Path) -> dict[str, int]:
    """Files under the data directory and their sizes, but the metrics' own (prometheus_client's
    per-process files appear at a process's first request, whatever it is)."""
    files = {}
    for path in root.rglob("*"):
        try:
            if path.is_file() and "metrics" not in path.relative_to(root).parts:
                files[str(path.relative_to(root))] = path.stat().st_size
        except OSError:
            continue
    return files


class Sampler:
    """While a request runs: the API's peak RSS, and the peak bytes of the files it holds open under
    `root` (the data and temp directories), deleted ones included (the multipart parser spools to
    unnamed temp files, which no directory listing shows afterwards)."""

    def __init__(self, pid: int, root: Path) -> None:
        self.pid, self.root = pid, str(root)
        self.peak_rss_kb = self.peak_files = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_kb = max(self.peak_rss_kb, _status_kb(self.pid, "VmRSS"))
            self.peak_files = max(self.peak_files, self._open_bytes())
            time.sleep(0.01)

    def _open_bytes(self) -> int:
        total = 0
        fds = Path(f"/proc/{self.pid}/fd")
        for fd in fds.iterdir() if fds.exists() else ():
            try:
                if os.readlink(fd).startswith(self.root):
                    total += os.stat(fd).st_size
            except OSError:
                continue
        return total


def _send(port: int, path: str) -> dict:
    boundary = "benchboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    total = len(head) + SIZE + len(tail)
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}"
               f"\r\nContent-Length: {total}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sent = [0]

    def push():
        try:
            sock.sendall(request + head)
            block = b"\0" * CHUNK
            left = SIZE
            while left > 0:
                n = sock.send(block[:min(CHUNK, left)])
                left -= n
                sent[0] += n
            sock.sendall(tail)
        except OSError:
            pass  # the server closed the connection: what we wanted

    started = time.monotonic()
    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    answer = b""
    sock.settimeout(120)
    try:
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    finally:
        elapsed = time.monotonic() - started
        sock.close()
        pusher.join(timeout=10)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return {"status": status, "answer_s": round(elapsed, 3), "client_sent_mb": round(sent[0] / 2**20, 1)}


def _image_bomb(port: int, pid: int, work: Path) -> dict:
    """A 16000x16000 PNG (a few hundred KB) uploaded with the key: time to the refusal, RSS peak."""
    import httpx

    path = png_bomb(work / "bomb.png", 16000)
    rss0 = _status_kb(pid, "VmRSS")
    times, codes = [], set()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=60) as client, \
            Sampler(pid, work) as sampled:
        for _ in range(3):
            started = time.monotonic()
            r = client.post("/v1/avatars", files={"file": ("portrait.png", path.read_bytes())})
            times.append(round(time.monotonic() - started, 3))
            codes.add(r.json()["error"]["code"])
    return {"file_kb": path.stat().st_size // 1024, "codes": sorted(codes), "answer_s": times,
            "api_peak_growth_mb": round((sampled.peak_rss_kb - rss0) / 1024, 1)}


def png_bomb(path: Path, side: int) -> Path:
    """A grey side x side PNG made row by row (a few hundred KB on disk, never whole in memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def main() -> None:
    from core.fleet import redis_argv
    from core.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-edges-"))
    data = work / "data"
    redis_port, api_port = _free_port(), _free_port()
    redis = subprocess.Popen(redis_argv(Settings(redis_password=None), port=redis_port, data_dir=work),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_")}
    env.update(MTL_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", MTL_DATA_DIR=str(data), MTL_API_PORT=str(api_port),
               MTL_API_PROCESSES="1", MTL_API_KEYS=f'["{KEY}"]', MTL_LOG_LEVEL="WARNING",
               TMPDIR=str(work / "tmp"))  # its own temp dir: the parser's spool files would show there
    (work / "tmp").mkdir()
    api = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", api_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1.0)
        pid = api.pid
        temp_dir = work / "tmp"
        temp_before = set(os.listdir(temp_dir))
        routes = {}
        for path in ROUTES:
            rss0 = _status_kb(pid, "VmRSS")
            disk0 = _disk(data)
            with Sampler(pid, work) as sampled:
                result = _send(api_port, path)
                time.sleep(0.3)
            rss1 = _status_kb(pid, "VmRSS")
            disk1 = _disk(data)
            result.update(rss_before_mb=round(rss0 / 1024, 1), rss_after_mb=round(rss1 / 1024, 1),
                          peak_growth_mb=round((sampled.peak_rss_kb - rss0) / 1024, 1),
                          peak_open_files_mb=round(sampled.peak_files / 2**20, 1),
                          data_files_added=sorted(set(disk1) - set(disk0)),
                          data_bytes_added=sum(disk1.values()) - sum(disk0.values()))
            routes[path] = result
        temp_added = sorted(set(os.listdir(temp_dir)) - temp_before)
        bomb = _image_bomb(api_port, pid, work)
        worst = max(r["peak_growth_mb"] for r in routes.values())
        emit("edges", {"body_mb": SIZE // 2**20, "routes": routes, "temp_files_added": temp_added, "image_bomb": bomb,
                       "worst_peak_rss_growth_mb": worst,
                       "ok": worst < 20 and all(r["status"] == 401 and not r["data_files_added"]
                                                and r["peak_open_files_mb"] < 1 for r in routes.values())
                             and not temp_added
                             and bomb["codes"] == ["image_too_large"] and max(bomb["answer_s"]) < 0.2})
    finally:
        api.terminate()
        api.wait(timeout=15)
        redis.terminate()
        redis.wait(timeout=15)


if __name__ == "__main__":
    main()
