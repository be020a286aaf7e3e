"""Expression feedback: answers made from the demo portrait, scored, summarised and stored in SQL
(SQLite by default, and a real MariaDB server started here)."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from conftest import Fleet, fleet_env, free_port, in_process_api, poll_job, wait_until
from fakellm import FakeLLM
from speech import tone_wav

SPEECH = "我叫小王，有五年的软件开发经验。"
KINDS = ("camera", "away", "down", "none")


def turn_head(img: np.ndarray, pts: np.ndarray, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """The same face turned sideways (yaw) or tilted down (pitch): the head is mapped onto a cylinder
    (horizontal for yaw, vertical for pitch) and rotated on it, fading out toward the neck and hair."""
    h, w = img.shape[:2]
    cx, cy = pts[1][0], pts[1][1]  # nose tip
    rx, ry = 0.62 * (pts[454][0] - pts[234][0]), 0.75 * (pts[152][1] - pts[10][1])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs - cx) / rx, (ys - cy) / ry

    def fade(t):
        t = np.clip(1.3 - np.abs(t), 0.0, 1.0)
        return t * t * (3 - 2 * t)

    map_x = np.where(np.abs(u) < 1, cx + rx * np.sin(np.arcsin(np.clip(u, -1, 1)) - math.radians(yaw_deg) * fade(v)), xs)
    map_y = np.where(np.abs(v) < 1, cy + ry * np.sin(np.arcsin(np.clip(v, -1, 1)) - math.radians(pitch_deg) * fade(u)), ys)
    return cv2.remap(img, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def read_frames(path: Path) -> tuple[list[np.ndarray], int, int]:
    w, h = (int(v) for v in subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0",
         str(path)], capture_output=True, text=True, check=True).stdout.strip().split(","))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    return list(frames), w, h


def encode(frames: list[np.ndarray], audio_from: Path, out: Path) -> Path:
    h, w = frames[0].shape[:2]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", "25",
                    "-i", "-", "-i", str(audio_from), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset",
                    "veryfast", "-pix_fmt", "yuv420p", "-c:a", "copy", "-shortest", str(out)],
                   input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return out


@pytest.fixture(scope="module")
def answers(api, tmp_path_factory) -> dict[str, Path]:
    """Four answers of the demo presenter saying the same sentence: looking at the camera, the head
    turned away, looking down, and no face at all (a grey picture with the same speech)."""
    from core.feedback.measure import FaceMeasurer

    r = api.post("/v1/lipsync", json={"avatar_id": "demo", "text": SPEECH})
    assert r.status_code == 202, r.text
    job = poll_job(api, r.json()["job_id"], timeout=300)
    assert job["status"] == "finished", job
    out = tmp_path_factory.mktemp("answers")
    talking = out / "camera.mp4"
    talking.write_bytes(api.get(job["result"]["url"]).content)
    frames, _w, _h = read_frames(talking)
    mesher = FaceMeasurer()
    pts = mesher.points(frames[0])
    mesher.close()
    assert pts is not None
    return {
        "camera": talking,
        "away": encode([turn_head(f, pts, yaw_deg=28) for f in frames], talking, out / "away.mp4"),
        "down": encode([turn_head(f, pts, pitch_deg=35) for f in frames], talking, out / "down.mp4"),
        "none": encode([np.full_like(f, 128) for f in frames], talking, out / "none.mp4"),
    }


def submit(client: httpx.Client, path: Path, ms_id: str, index: int, language: str | None = None) -> str:
    data = {"ms_id": ms_id, "index": str(index), **({"language": language} if language else {})}
    r = client.post("/v1/feedback", data=data, files={"file": (path.name, path.read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def judge(client: httpx.Client, answers: dict[str, Path], ms_id: str, language: str | None = None) -> dict[str, dict]:
    jobs = {kind: submit(client, answers[kind], ms_id, i, language) for i, kind in enumerate(KINDS)}
    results = {}
    for kind, job_id in jobs.items():
        job = poll_job(client, job_id, timeout=240)
        assert job["status"] == "finished", job
        results[kind] = job["result"]
    return results


def check_ordered(results: dict[str, dict]) -> None:
    scores = {k: r["score"] for k, r in results.items()}
    assert scores["camera"] > scores["away"] > scores["none"], scores
    assert scores["camera"] > scores["down"] > scores["none"], scores
    assert scores["camera"] >= 75 and scores["none"] <= 10, scores
    assert "eye_contact_good" in results["camera"]["findings"]
    assert "looking_aside" in results["away"]["findings"]
    assert "looking_down" in results["down"]["findings"]
    assert results["none"]["findings"] == ["no_face"]
    assert results["camera"]["components"]["speaking"] > 0  # the mouth moves with the speech
    assert results["camera"]["measures"]["face_share"] == 1.0 and results["none"]["measures"]["face_share"] == 0.0


def test_scores_are_ordered_and_rows_are_in_sqlite(api, service, answers):
    ms_id = f"ms-{uuid.uuid4().hex[:8]}"
    results = judge(api, answers, ms_id)
    check_ordered(results)
    summaries = {k: r["summary"] for k, r in results.items()}
    assert "眼神交流良好" in summaries["camera"] and "转向一侧" in summaries["away"]
    assert "低着头" in summaries["down"] and "没有检测到人脸" in summaries["none"]
    assert len(set(summaries.values())) == 4

    listed = api.get("/v1/feedback", params={"ms_id": ms_id}).json()["results"]
    assert [(row["index"], row["sort"]) for row in listed] == [(i, results[k]["score"]) for i, k in enumerate(KINDS)]
    db = service.data_dir / "db" / "feedback.sqlite3"
    with sqlite3.connect(db) as conn:
        rows = conn.execute('SELECT "index", content, sort, url, eye_contact FROM b_mianshi_bq WHERE ms_id = ? '
                            'ORDER BY "index"', (ms_id,)).fetchall()
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    assert [r[1] for r in rows] == [summaries[k] for k in KINDS] and [r[2] for r in rows] == [listed[i]["sort"] for i in range(4)]
    image = api.get(rows[0][3])  # the frame image, served under the legacy tests/ path
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    assert rows[0][4] > rows[1][4]

    # Re-submitting an answer replaces its row: /bqfk with the camera answer for index 1.
    r = api.get("/bqfk", params={"url": results["camera"]["source"], "msId": ms_id, "index": "1"})
    assert r.status_code == 200 and r.json() == {"message": "success"}
    wait_until(lambda: next(row for row in api.get("/v1/feedback", params={"ms_id": ms_id}).json()["results"]
                            if row["index"] == 1)["sort"] == results["camera"]["score"], 120, what="the replaced row")
    with sqlite3.connect(db) as conn:
        count = conn.execute('SELECT COUNT(*) FROM b_mianshi_bq WHERE ms_id = ? AND "index" = 1', (ms_id,)).fetchone()[0]
    assert count == 1


def test_english_summary(api, answers):
    job = poll_job(api, submit(api, answers["away"], f"en-{uuid.uuid4().hex[:8]}", 0, "en"), timeout=240)
    assert job["status"] == "finished", job
    assert job["result"]["summary"].startswith("Overall score") and "turned to the side" in job["result"]["summary"]


def test_feedback_errors(api, answers, tmp_path):
    assert api.get("/bqfk", params={"msId": "m", "index": "0"}).status_code == 400
    r = api.get("/bqfk", params={"url": "/etc/passwd", "msId": "m", "index": "0"})
    assert r.status_code == 404 and r.json()["message"]
    up = api.post("/v1/files", files={"file": ("tone.wav", tone_wav(2.0), "audio/wav")}).json()
    r = api.get("/bqfk", params={"url": up["legacy_path"], "msId": "m", "index": "0"})
    assert r.status_code == 422 and r.json()["error"] == "no_frames"  # a video with no frames
    assert api.get("/bqfk", params={"url": up["legacy_path"], "msId": "m", "index": "x"}).status_code == 422
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.full((64, 64, 3), 128, np.uint8))
    r = api.post("/v1/feedback", data={"ms_id": "m", "index": "0"}, files={"file": ("still.png", still.read_bytes())})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_frames"
    r = api.post("/v1/feedback", data={"ms_id": "bad id!", "index": "0", "source": "x"})
    assert r.status_code == 422
    r = api.post("/v1/feedback", data={"ms_id": "m", "index": "-1"},
                 files={"file": ("a.mp4", answers["camera"].read_bytes(), "video/mp4")})
    assert r.status_code == 422
    assert api.get("/v1/feedback", params={"ms_id": "nobody"}).json() == {"ms_id": "nobody", "results": []}


def test_vision_summary_and_its_fallback(tmp_path):
    from core.feedback.measure import summarise
    from core.settings import Settings
    from workers.feedback import describe

    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    llm = FakeLLM()
    try:
        llm.script = [("content", "  看镜头较少，表情自然。 ")]
        settings = Settings(feedback_vision_url=llm.url, feedback_vision_model="eyes", feedback_vision_api_key="k")
        out = describe(settings, summarise([None] * 5, 0.2), image, "zh")
        assert out["summary"] == "看镜头较少，表情自然。" and out["analyser"] == "vision:eyes" and out["score"] == 0
        content = llm.requests[0]["body"]["messages"][0]["content"]
        assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert llm.requests[0]["auth"] == "Bearer k"
    finally:
        llm.stop()
    out = describe(settings, summarise([None] * 5, 0.2), image, "en")  # the model is gone: the local summary
    assert out["analyser"] == "local" and out["vision_error"] and out["summary"].startswith("Overall score 0/100.")


# ---- MariaDB ----

@pytest.fixture(scope="module")
def mariadb_url(tmp_path_factory):
    """A MariaDB server of the Debian package on a free port, with its own data directory."""
    server = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
    install = shutil.which("mariadb-install-db")
    if not server or not install:
        pytest.skip("MariaDB is not installed (Debian package mariadb-server; `make install` adds it)")
    import pymysql

    datadir = tmp_path_factory.mktemp("mariadb")
    run_dir = Path(tempfile.mkdtemp(prefix="mtl-mdb-"))  # a short path: the socket must fit sockaddr_un
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run([install, "--no-defaults", f"--datadir={datadir}", *user, "--auth-root-authentication-method=normal",
                    "--skip-test-db"], check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen([server, "--no-defaults", f"--datadir={datadir}", f"--port={port}", "--bind-address=127.0.0.1",
                             f"--socket={run_dir}/mysqld.sock", f"--pid-file={run_dir}/mysqld.pid", "--skip-log-bin",
                             "--innodb-buffer-pool-size=32M", *user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connects():
        try:
            conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
        except pymysql.MySQLError:
            return None
        with conn:
            conn.cursor().execute("CREATE DATABASE IF NOT EXISTS mtl")
        return True

    try:
        wait_until(connects, 60, interval=0.5, what="mariadbd")
        yield f"mysql+pymysql://root@127.0.0.1:{port}/mtl"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb_api(redis_server, mariadb_url, tmp_path_factory):
    """A feedback worker writing to MariaDB (Redis database 1, its own data directory) and the app, in
    this process, reading the rows back: what is tested is the worker's rows, not the API process."""
    env = fleet_env(redis_server.url(1), tmp_path_factory.mktemp("mdb-data"), MTL_FEEDBACK_DB_URL=mariadb_url)
    fleet = Fleet(env=env, log_dir=tmp_path_factory.mktemp("mdb-logs"))
    fleet.worker("feedback")

    def worker_ready(client):
        try:
            return client.get("/readyz").json()["queues"]["feedback"]["workers"] > 0
        except (KeyError, ValueError):
            return False

    try:
        with in_process_api(env) as client:
            wait_until(lambda: worker_ready(client), 120, interval=0.5, what="the MariaDB feedback worker")
            yield client
    finally:
        fleet.stop()


def test_rows_in_mariadb(mariadb_api, mariadb_url, answers):
    from sqlalchemy import create_engine, text

    ms_id = f"mdb-{uuid.uuid4().hex[:8]}"
    results = judge(mariadb_api, answers, ms_id)
    check_ordered(results)
    engine = create_engine(mariadb_url)
    query = text("SELECT `index`, content, sort, url FROM b_mianshi_bq WHERE ms_id = :m ORDER BY `index`")
    with engine.connect() as conn:
        rows = conn.execute(query, {"m": ms_id}).fetchall()
        assert [(r[0], r[1], r[2]) for r in rows] == [(i, results[k]["summary"], results[k]["score"])
                                                       for i, k in enumerate(KINDS)]
        assert "眼神交流良好" in rows[0][1] and rows[0][3].endswith(".jpg")
    # Re-submitted: the camera answer replaces the no-face one at index 3, one row in the table.
    job = poll_job(mariadb_api, submit(mariadb_api, answers["camera"], ms_id, 3), timeout=240)
    assert job["status"] == "finished", job
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT sort FROM b_mianshi_bq WHERE ms_id = :m AND `index` = 3"), {"m": ms_id}).fetchall()
    assert [r[0] for r in rows] == [job["result"]["score"]] and rows[0][0] > results["none"]["score"]
    listed = mariadb_api.get("/v1/feedback", params={"ms_id": ms_id}).json()["results"]
    assert len(listed) == 4 and listed[3]["sort"] == job["result"]["score"]
    engine.dispose()
