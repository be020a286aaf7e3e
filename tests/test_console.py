"""The operators' console (/console) in a real headless Chromium against the real fleet: a room
made to speak and watched live over HTTP-FLV (video advances, pictures change, WebAudio hears the
speech, the list shows it speaking), avatars uploaded with a progress bar, a bad upload's error in
plain words, a render with its video-less mouth player, the fleet page, and API keys.

Screenshots go to results/test-artifacts/console/ (MTL_TEST_ARTIFACTS overrides it).
Skipped only when the machine has no Chromium with its driver (`make test` installs both)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selenium.webdriver.support.select import Select

from bench.browser import console_errors
from conftest import ROOT, headless_browser, copy_screenshots, settings_of, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ARTIFACTS = Path(os.environ.get("MTL_TEST_ARTIFACTS", ROOT / "results" / "test-artifacts")) / "console"
SENTENCE = "Hello, and welcome to the live room. Today we talk about your work, your team and your plans."


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with headless_browser() as driver:
        yield driver


def shot(driver, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def open_console(driver, api, tab: str = "rooms") -> None:
    driver.get(f"{api.base_url}/console/#{tab}")
    wait_until(lambda: js(driver, "return !!(window.mtlConsole && window.mtlConsole.player)"), 15,
               what="the console's script")


def element_png(driver, css: str) -> np.ndarray:
    png = driver.find_element("css selector", css).screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def set_file(driver, css: str, path: Path) -> None:
    # The file inputs are transparent overlays on their buttons; make the one used reachable.
    element = driver.find_element("css selector", css)
    js(driver, "arguments[0].style.opacity = 1; arguments[0].style.position = 'static';", element)
    element.send_keys(str(path))
    js(driver, "arguments[0].style.opacity = ''; arguments[0].style.position = '';", element)


def test_room_speaks_and_plays_live_in_the_page(browser, api, service):
    d = browser
    open_console(d, api)
    d.find_element("id", "room-username").send_keys("console_room")
    Select(d.find_element("id", "room-language")).select_by_value("en")
    d.find_element("css selector", "#room-form button[type=submit]").click()
    room = wait_until(lambda: js(d, "return window.mtlConsole.room"), 15, what="the new room to open")
    assert room["username"] == "console_room" and room["language"] == "en"

    # The video plays: its clock advances and it has a picture.
    def playing():
        return js(d, "const v = document.querySelector('#live-video'); return v.videoWidth > 0 && v.currentTime > 1.0")

    wait_until(playing, 40, interval=0.5, what="the live video to play")
    t0 = js(d, "return document.querySelector('#live-video').currentTime")
    time.sleep(2.0)
    t1 = js(d, "return document.querySelector('#live-video').currentTime")
    assert t1 - t0 > 1.2, (t0, t1)
    quiet = js(d, "return window.mtlConsole.meter.maxSince(Date.now() - 1500)")
    assert quiet < 0.01, f"the idle room should be silent, level {quiet}"

    # Make it speak text, as an operator does.
    said_at = js(d, "return Date.now()")
    d.find_element("id", "say-text").send_keys(SENTENCE)
    d.find_element("id", "say-button").click()

    def row_state():
        return js(d, "const b = document.querySelector(`#rooms-table tr[data-room='${arguments[0]}'] .badge`);"
                     "return b && b.dataset.state", room["id"])

    wait_until(lambda: row_state() == "speaking", 40, interval=0.2, what="the room list to show it speaking")
    shot(d, "room-speaking-list")

    # Audio arrives: the page's WebAudio meter hears speech.
    wait_until(lambda: js(d, "return window.mtlConsole.meter.maxSince(arguments[0])", said_at) > 0.03, 20,
               interval=0.1, what="speech in the page's audio")
    # The picture changes while it speaks (the mouth moves).
    frames = []
    for _ in range(4):
        frames.append(element_png(d, "#live-video"))
        time.sleep(0.35)
    diffs = [float(np.mean(np.abs(a - b))) for a, b in zip(frames, frames[1:])]
    assert max(diffs) > 0.5, diffs
    Image.fromarray(frames[0].astype(np.uint8)).save(ARTIFACTS / "live-video-1.png")
    Image.fromarray(frames[-1].astype(np.uint8)).save(ARTIFACTS / "live-video-2.png")
    shot(d, "room-speaking")
    stats = js(d, "return [window.mtlConsole.player.bufferAhead(), window.mtlConsole.player.reconnects]")
    assert stats[1] == 0, "the player had to reconnect"
    assert stats[0] < 2.0, f"{stats[0]:.2f} s buffered: not a low-latency playback"

    # The list counts this page as a viewer of the FLV route.
    wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json()["viewers_by_route"].get("flv", 0) >= 1, 10,
               what="the FLV viewer in the room's state")
    # Interrupt: back to idle.
    d.find_element("id", "interrupt-button").click()
    wait_until(lambda: row_state() == "idle", 20, interval=0.2, what="idle after the interrupt")

    # Ask: the message goes to the room's responder, and the page's transcript (fed by the room's
    # WebSocket) shows the question and the reply once spoken.
    d.find_element("id", "say-converse").click()
    d.find_element("id", "say-text").send_keys("Hello, I am ready for the interview.")
    d.find_element("id", "say-button").click()

    def transcript():
        return js(d, "return [...document.querySelectorAll('#conversation li')].map(li => li.className + '|' + li.innerText)")

    rows = wait_until(lambda: (t := transcript()) and any("assistant spoken" in r for r in t) and t, 60, interval=0.3,
                      what="the reply in the page's transcript")
    assert "user" in rows[0] and "Hello, I am ready" in rows[0], rows
    reply = next(r for r in rows if "assistant spoken" in r)
    assert "script" in reply and "introducing yourself" in reply, rows  # the English script's first question
    shot(d, "room-conversation")
    assert not [e for e in console_errors(d) if "favicon" not in e], console_errors(d)


def _portrait(path: Path) -> Path:
    from skimage import data

    Image.fromarray(data.astronaut()).resize((384, 384)).save(path)
    return path


def test_avatar_upload_shows_progress_until_ready(browser, api, tmp_path):
    d = browser
    open_console(d, api, "avatars")
    set_file(d, "#avatar-file", _portrait(tmp_path / "portrait.png"))
    d.find_element("id", "avatar-id").send_keys("console_upload")
    d.find_element("id", "avatar-submit").click()
    seen = set()

    def finished():
        phase = js(d, "return document.querySelector('#avatar-progress').dataset.phase")
        width = js(d, "return document.querySelector('#avatar-bar').style.width")
        seen.add(width)
        return phase if phase in ("done", "failed") else None

    assert wait_until(finished, 120, interval=0.1, what="the avatar to be prepared") == "done", \
        d.find_element("id", "avatar-error").text
    assert d.find_element("id", "avatar-phase").text == "ready: console_upload"
    assert js(d, "return document.querySelector('#avatar-bar').style.width") == "100%"
    assert len(seen) >= 2, seen  # the bar moved on its way
    # The gallery redraws after the job finished: the card drawn while it was preparing turns ready.
    # Read in one script: the gallery can redraw between finding a card and reading its text (a stale element).
    wait_until(lambda: "ready" in js(d, "return [...document.querySelectorAll('[data-avatar=console_upload]')]"
                                        ".map(c => c.innerText).join(' ')"),
               10, what="the new avatar in the gallery, ready")
    wait_until(lambda: js(d, "return getComputedStyle(document.querySelector("
                             "'[data-avatar=console_upload] .thumb')).backgroundImage.startsWith('url(\"blob:')"),
               10, what="its thumbnail")
    shot(d, "avatar-ready")


def test_bad_uploads_show_their_error_in_plain_words(browser, api, tmp_path):
    d = browser
    open_console(d, api, "avatars")
    # Not a picture at all: refused at once.
    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"this is not an image\n" * 20)
    set_file(d, "#avatar-file", bogus)
    d.find_element("id", "avatar-submit").click()
    box = wait_until(lambda: d.find_element("id", "avatar-error").is_displayed() and d.find_element("id", "avatar-error"),
                     20, what="the upload's error")
    assert "not a video or picture this service can read" in box.text, box.text
    # A real picture without a face: the preparation fails, and says why.
    gradient = np.tile(np.linspace(40, 220, 320, dtype=np.uint8), (320, 1))
    Image.fromarray(np.stack([gradient, gradient[::-1], gradient.T], -1)).save(tmp_path / "wall.png")
    set_file(d, "#avatar-file", tmp_path / "wall.png")
    d.find_element("id", "avatar-id").send_keys("console_noface")
    d.find_element("id", "avatar-submit").click()
    wait_until(lambda: js(d, "return document.querySelector('#avatar-progress').dataset.phase") == "failed", 120,
               interval=0.2, what="the preparation to fail")
    text = d.find_element("id", "avatar-error").text
    assert "No face was found" in text, text
    shot(d, "avatar-error")


def test_render_plays_and_the_mouth_player_animates_without_video(browser, api):
    d = browser
    open_console(d, api, "renders")
    wait_until(lambda: js(d, "return document.querySelectorAll('#render-avatar option').length"), 15,
               what="the avatar list")
    Select(d.find_element("id", "render-avatar")).select_by_value("demo")
    d.find_element("id", "render-text").send_keys("Nice to meet you. Shall we begin?")
    d.find_element("css selector", "#render-form button[type=submit]").click()
    wait_until(lambda: js(d, "return document.querySelector('#render-progress').dataset.phase") in ("done", "failed"),
               180, interval=0.3, what="the render")
    assert js(d, "return document.querySelector('#render-progress').dataset.phase") == "done", \
        d.find_element("id", "render-error").text
    wait_until(lambda: js(d, "const v = document.querySelector('#render-video'); return v.currentTime > 0.3"), 20,
               what="the MP4 to play")
    wait_until(lambda: js(d, "return window.mtlConsole.mouth.series !== null && window.mtlConsole.mouth.portrait !== null"),
               20, what="the mouth player's inputs")
    d.find_element("id", "mouth-play").click()
    # Caught while the mouth is open: the canvas as drawn then, and at rest after the audio ended.
    canvas_open = wait_until(lambda: js(d, "const m = window.mtlConsole.mouth;"
                                           "return m.lastOpen > 0.3 ? m.canvas.toDataURL('image/png') : null"),
                             15, interval=0.02, what="the drawn mouth to open")
    shot(d, "render")
    wait_until(lambda: js(d, "return document.querySelector('#mouth-audio').ended"), 15, what="the audio to end")
    canvas_rest = js(d, "return window.mtlConsole.mouth.canvas.toDataURL('image/png')")
    open_px, rest_px = (_data_url_pixels(u) for u in (canvas_open, canvas_rest))
    changed = np.abs(open_px - rest_px) > 20
    # The parted lips (a few hundred pixels of a 512x512 portrait), and nothing far from the mouth.
    assert changed.sum() >= 80, changed.sum()
    assert changed.mean() < 0.05, changed.mean()


def _data_url_pixels(url: str) -> np.ndarray:
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L"), np.float32)


def test_fleet_page_shows_queues_workers_and_jobs(browser, api):
    d = browser
    open_console(d, api, "fleet")
    wait_until(lambda: len(d.find_elements("css selector", "#queues-table tbody tr")) >= 4, 15, what="the queues")
    # Read in one go: the page redraws the table every few seconds (element handles go stale).
    cells = js(d, "return [...document.querySelectorAll('#queues-table tbody tr')].map(tr => [...tr.cells].map(td => td.innerText))")
    rows = {row[0]: row for row in cells}
    assert set(rows) >= {"tts", "asr", "avatar", "lipsync", "converse"}
    assert all(int(row[4]) >= 1 for row in rows.values()), rows
    wait_until(lambda: d.find_elements("css selector", "#jobs-table tbody tr"), 15, what="recent jobs")
    assert d.find_elements("css selector", "a[href='/docs']")
    shot(d, "fleet")


def test_api_key_is_asked_once_and_kept_for_the_session(browser, service):
    """The console against the app with keys on, served from this process (what the page does with
    the key is tested, not an API process), on the session fleet's Redis."""
    from api.access import key_owner
    from test_voice import serving

    settings = settings_of({**service.env, "MTL_API_KEYS": '["console-secret"]'})
    with serving(settings, keep_data=True) as served:  # the fleet's Redis: its data stays
        room = served.store.create(username="console_key", language="en", owner=key_owner("console-secret"))
        base = served.base.replace("ws://", "http://", 1)
        d = browser
        d.get(f"{base}/console/#rooms")
        wait_until(lambda: d.find_element("id", "banner").is_displayed(), 10, what="the key banner")
        assert "API key" in d.find_element("id", "banner").text
        key = d.find_element("id", "api-key")
        key.send_keys("console-secret")
        d.find_element("css selector", "#key-form button[type=submit]").click()
        wait_until(lambda: js(d, "return window.mtlConsole.rooms.length") > 0, 10, what="rooms with the key")
        d.refresh()
        wait_until(lambda: js(d, "return !!window.mtlConsole && window.mtlConsole.rooms.length > 0"), 10,
                   what="rooms after a reload (the key kept in the session)")
        assert not d.find_element("id", "banner").is_displayed()
        js(d, "sessionStorage.clear()")
        served.store.close(room.id)


def test_console_loads_nothing_from_outside(browser, api):
    d = browser
    open_console(d, api)
    time.sleep(1)
    hosts = js(d, "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
    assert hosts and set(hosts) == {api.base_url.netloc.decode()}, hosts
    html = api.get("/console/").text
    assert "http://" not in html and "https://" not in html


def teardown_module(module):
    copy_screenshots(ARTIFACTS)
