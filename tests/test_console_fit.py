"""The console and the audience page as an operator and a viewer use them, in a real headless Chromium
against the real fleet: no sideways scrolling on a phone (390x844) or a laptop (1440x900), in English
and Chinese; the watched room kept in the URL; copy buttons and OBS's server + stream key; text limits
said instead of cut; the avatar picker newest first with thumbnails; a `faq` room answering from the
sample product sheet with the question marked answered; and the audience page, muted by the browser's
autoplay policy, heard after one click.

Screenshots go to results/test-artifacts/console-fit/ (MTL_TEST_ARTIFACTS overrides the root;
MTL_CONSOLE_SHOTS copies them elsewhere too)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from selenium.webdriver.support.select import Select

from bench.browser import chromium, console_errors, find_browser
from conftest import ROOT, headless_browser, copy_screenshots, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ARTIFACTS = Path(os.environ.get("MTL_TEST_ARTIFACTS", ROOT / "results" / "test-artifacts")) / "console-fit"
SIZES = {"phone": (390, 844), "laptop": (1440, 900)}
SENTENCE = "Welcome to the live room. Today we look at a thermos, a rice cooker and a warm down jacket for winter."
ZH_SENTENCE = "欢迎来到直播间，今天给大家介绍保温杯、电饭煲和一件很暖和的羽绒服。"


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def viewport(driver, name: str) -> None:
    width, height = SIZES[name]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def overflow(driver) -> list:
    """What scrolls sideways: the page itself, and any card wider than its box."""
    return js(driver, """
        const out = [];
        const root = document.documentElement;
        if (root.scrollWidth > root.clientWidth) out.push(['page', root.scrollWidth, root.clientWidth]);
        for (const el of document.querySelectorAll('.card, .controls, #stage')) {
          if (el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
            out.push([el.id || el.className, el.scrollWidth, el.clientWidth]);
        }
        return out;""")


@pytest.fixture(scope="module")
def browser():
    with headless_browser() as driver:
        yield driver


@pytest.fixture(scope="module")
def room(api, service):
    """An English room answering from the sample product sheet, on air."""
    r = api.post("/v1/rooms", json={"username": "fit_room", "language": "en", "responder": "faq"})
    assert r.status_code == 201, r.text
    room = r.json()
    wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json()["state"] != "dark", 60, interval=0.5,
               what="the room on air")
    yield room
    api.delete(f"/v1/rooms/{room['id']}")


def open_console(driver, api, fragment: str = "rooms", lang: str = "en") -> None:
    # A fresh page each time: a URL differing only in its hash would keep the earlier test's page (and
    # the room it watched) and only fire hashchange.
    driver.get("about:blank")
    driver.get(f"{api.base_url}/console/?lang={lang}#{fragment}")
    wait_until(lambda: js(driver, "return !!(window.mtlConsole && window.mtlConsole.player)"), 15,
               what="the console's script")
    if fragment.startswith("rooms"):
        wait_until(lambda: js(driver, "return document.querySelector('#rooms-count').textContent !== ''"), 15,
                   what="the rooms list")


def test_console_fits_phone_and_laptop_in_both_languages(browser, api, room):
    d = browser
    for lang in ("en", "zh"):
        for size in SIZES:
            viewport(d, size)
            open_console(d, api, lang=lang)
            js(d, "document.querySelector('#room-answers').open = true")  # the whole form, unfolded
            assert js(d, "return document.documentElement.lang").startswith(lang)
            assert overflow(d) == [], (lang, size, "rooms list", overflow(d))
            shot(d, f"rooms-{size}-{lang}")
            open_console(d, api, f"rooms/{room['id']}", lang=lang)
            wait_until(lambda: js(d, "const v = document.querySelector('#live-video'); return v.currentTime > 0.5"),
                       40, interval=0.3, what="the live video")
            api.post(f"/v1/rooms/{room['id']}/say", json={"text": ZH_SENTENCE if lang == "zh" else SENTENCE})
            wait_until(lambda: js(d, "return document.querySelector('#room-state').dataset.state") == "speaking", 40,
                       interval=0.2, what="the room speaking in the view")
            time.sleep(1.0)  # the mouth moving, for the picture
            assert overflow(d) == [], (lang, size, "room view", overflow(d))
            shot(d, f"room-speaking-{size}-{lang}")
            if size == "phone":
                # One column: the video and the list are stacked, each as wide as the screen allows.
                video, rooms = (js(d, f"return document.querySelector('{css}').getBoundingClientRect().toJSON()")
                                for css in ("#live-video", "#rooms-table"))
                assert video["width"] <= 390 and video["width"] > 300, video
                assert abs(video["left"] - rooms["left"]) < 20, (video, rooms)
                buttons = js(d, "return ['#say-button', '#interrupt-button', '#say-converse'].map(s => "
                                "document.querySelector(s).getBoundingClientRect().right)")
                assert max(buttons) <= 390, buttons
            api.post(f"/v1/rooms/{room['id']}/interrupt")
    text = js(d, "return document.querySelector('#tabs').innerText")
    assert "直播间" in text and "数字人" in text, text
    assert not [e for e in console_errors(d) if "favicon" not in e], console_errors(d)


def test_the_language_follows_the_browser_and_switches(api, room):
    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed")
    d = chromium(lang="zh-CN")
    try:
        d.get(f"{api.base_url}/console/#rooms")
        wait_until(lambda: js(d, "return document.querySelector('[data-tab=rooms]').textContent") == "直播间", 15,
                   what="Chinese text from the browser's language")
        Select(d.find_element("id", "lang")).select_by_value("en")
        assert js(d, "return document.querySelector('[data-tab=rooms]').textContent") == "Rooms"
        d.refresh()  # the choice is remembered
        wait_until(lambda: js(d, "return document.querySelector('[data-tab=avatars]').textContent") == "Avatars", 15,
                   what="the chosen language after a reload")
    finally:
        d.quit()


def test_reload_returns_to_the_room_and_urls_copy(browser, api, room):
    d = browser
    viewport(d, "laptop")
    open_console(d, api)
    d.find_element("css selector", f"#rooms-table tr[data-room='{room['id']}'] .actions button").click()
    wait_until(lambda: d.current_url.endswith(f"#rooms/{room['id']}"), 10, what="the room in the URL")
    d.refresh()
    wait_until(lambda: js(d, "return window.mtlConsole.room && window.mtlConsole.room.id") == room["id"], 20,
               what="the same room after a reload")
    # Every play URL and OBS's pair have a copy button, and the copy is the whole value.
    names = js(d, "return [...document.querySelectorAll('#room-urls .url-row')].map(r => r.dataset.url)")
    assert {"audience", "flv", "hls", "rtmp", "obs-server", "obs-key"} <= set(names), names
    for name, want in (("obs-key", room["stream_key"]), ("obs-server", room["urls"]["rtmp"].rsplit("/", 1)[0]),
                       ("hls", room["urls"]["hls"])):
        d.find_element("css selector", f"#room-urls button[data-copy='{name}']").click()
        wait_until(lambda: js(d, "return window.mtlConsole.lastCopied") == want, 5, what=f"{name} copied")
    assert want.endswith(".m3u8")


def test_the_room_form_sets_responder_prompt_and_material(browser, api, tmp_path):
    d = browser
    viewport(d, "phone")
    open_console(d, api)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("name,price,facts\n手工皂,三十九元一块,橄榄油冷制\n", encoding="utf-8")
    d.find_element("css selector", "#room-answers summary").click()
    d.find_element("id", "room-username").send_keys("fit_form")
    Select(d.find_element("id", "room-responder")).select_by_value("faq")
    d.find_element("id", "room-prompt").send_keys("You host a soap shop.")
    element = d.find_element("id", "room-material")
    js(d, "arguments[0].style.opacity = 1; arguments[0].style.position = 'static';", element)
    element.send_keys(str(sheet))
    js(d, "arguments[0].style.opacity = ''; arguments[0].style.position = '';", element)
    assert d.find_element("id", "room-material-name").text == "sheet.csv"
    assert overflow(d) == [], overflow(d)
    shot(d, "room-form-phone-en")
    d.find_element("css selector", "#room-form button[type=submit]").click()
    made = wait_until(lambda: js(d, "return window.mtlConsole.room && window.mtlConsole.room.username === 'fit_form' "
                                    "&& window.mtlConsole.room"), 20, what="the new room opened")
    try:
        got = api.get(f"/v1/rooms/{made['id']}").json()
        assert got["responder"] == "faq" and got["system_prompt"] == "You host a soap shop.", got
        material = wait_until(lambda: (m := api.get(f"/v1/rooms/{made['id']}/material").json())["source"] == "room"
                              and m, 10, what="the uploaded material")
        assert material["products"] == 1 and material["material"]["products"][0]["name"] == "手工皂", material
    finally:
        api.delete(f"/v1/rooms/{made['id']}")


def test_text_limits_are_counted_and_said(browser, api, room):
    d = browser
    open_console(d, api, f"rooms/{room['id']}")
    wait_until(lambda: js(d, "return window.mtlConsole.room && window.mtlConsole.room.id") == room["id"], 15,
               what="this room's view")  # not the room an earlier test left open (a hash change loads no page)
    # The fleet's MTL_MAX_TEXT_CHARS, read from the API.
    wait_until(lambda: js(d, "return window.mtlConsole.limits.text_chars") == 500, 10, what="the API's text limit")
    box = d.find_element("id", "say-text")
    js(d, "arguments[0].value = 'x'.repeat(3000); arguments[0].dispatchEvent(new Event('input'))", box)
    counter = d.find_element("id", "say-count")
    assert counter.text == "3000 / 500" and "over" in counter.get_attribute("class")
    d.find_element("id", "say-button").click()
    error = wait_until(lambda: d.find_element("id", "say-error").is_displayed() and d.find_element("id", "say-error").text,
                       5, what="the limit's message")
    assert "3000" in error and "500" in error, error
    assert js(d, "return document.querySelector('#say-text').value.length") == 3000  # nothing cut
    js(d, "arguments[0].value = '   '; arguments[0].dispatchEvent(new Event('input'))", box)
    d.find_element("id", "say-button").click()
    wait_until(lambda: "empty" in d.find_element("id", "say-error").text, 5, what="the empty text's message")


def test_avatar_picker_newest_first_with_thumbnails(browser, api):
    d = browser
    open_console(d, api)
    wanted = [a["id"] for a in api.get("/v1/avatars").json() if a["status"] == "ready"]
    times = [a["prepared_at"] for a in api.get("/v1/avatars").json() if a["status"] == "ready"]
    assert times == sorted(times, reverse=True), times
    wait_until(lambda: js(d, "return [...document.querySelectorAll('#room-avatar-picker .pick')].map(b => b.dataset.pick)")
               == wanted, 15, what="the picker in the API's order")
    wait_until(lambda: js(d, "return [...document.querySelectorAll('#room-avatar-picker .pick-thumb')]"
                             ".every(t => getComputedStyle(t).backgroundImage.startsWith('url(\"blob:'))"), 15,
               what="every thumbnail")
    assert js(d, "return document.querySelector('#room-avatar').value") == wanted[0]


def test_a_faq_room_answers_from_the_sample_sheet_and_marks_it_answered(browser, api, room):
    d = browser
    open_console(d, api, f"rooms/{room['id']}")
    wait_until(lambda: js(d, "return window.mtlConsole.room && window.mtlConsole.room.id") == room["id"], 15,
               what="this room's view")  # not the room an earlier test left open (a hash change loads no page)
    d.find_element("id", "say-converse").click()
    d.find_element("id", "say-text").send_keys("How much is the thermos bottle?")
    d.find_element("id", "say-button").click()

    def rows():
        return js(d, "return [...document.querySelectorAll('#conversation li')].map(li => [li.dataset.status, li.innerText])")

    done = wait_until(lambda: (r := rows()) and any(s == "spoken" for s, _ in r) and r, 60, interval=0.3,
                      what="the faq reply spoken")
    user = next(text for s, text in done if "How much is the thermos" in text)
    reply = next(text for s, text in done if s == "spoken")
    assert "faq" in reply and "69 yuan" in reply, done
    assert next(s for s, text in done if text == user) == "answered", done
    assert "answered" in user, user
    shot(d, "room-faq-answered")


def test_fleet_page_shows_processes_durations_and_a_failure_window(browser, api, room):
    d = browser
    viewport(d, "laptop")
    # A converse job that names its room: asked through the API, answered by the faq responder.
    api.post(f"/v1/rooms/{room['id']}/messages", json={"text": "Any discount today?"})
    fleet = api.get("/v1/fleet", params={"window_s": 60}).json()
    assert fleet["window_s"] == 60 and all(q["failed_window"] <= q["failed"] for q in fleet["queues"].values())
    kinds = {p["kind"] for p in fleet["processes"]}
    assert {"api", "stream", "tts", "converse"} <= kinds, kinds
    assert all(p["rss_mb"] and p["rss_mb"] > 5 and p["cpu_percent"] is not None for p in fleet["processes"]), fleet
    open_console(d, api, "fleet")
    rows = wait_until(lambda: js(d, "return [...document.querySelectorAll('#procs-table tbody tr')].map(tr => "
                                    "[...tr.cells].map(td => td.innerText))"), 15, what="the processes")
    assert all(r[3].endswith("%") and r[4].endswith("MB") for r in rows), rows
    jobs = wait_until(lambda: (j := js(d, "return [...document.querySelectorAll('#jobs-table tbody tr')].map(tr => "
                                          "[...tr.cells].map(td => td.innerText))"))
                      and any(r[1] == "converse" and "fit_room" in r[4] and r[3].endswith(" s") for r in j) and j,
                      20, what="the converse job with its room and duration")
    Select(d.find_element("id", "fleet-window")).select_by_value("900")
    assert overflow(d) == [], overflow(d)
    shot(d, "fleet-laptop-en")
    viewport(d, "phone")
    time.sleep(0.5)
    assert overflow(d) == [], overflow(d)
    shot(d, "fleet-phone-en")
    assert jobs


def click_corner(driver) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    players = driver.find_element("id", "players")
    size = players.size
    ActionChains(driver).move_to_element_with_offset(players, -size["width"] // 3, -size["height"] // 4).click().perform()


def test_the_audience_page_is_heard_after_one_click(api, room):
    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed")
    d = chromium(autoplay_sound=False)  # the browser's real policy: no sound before a gesture
    try:
        for size in SIZES:
            viewport(d, size)
            for lang in ("en", "zh"):
                d.get(f"{api.base_url}/console/watch.html?key={room['stream_key']}&lang={lang}")
                wait_until(lambda: js(d, "const v = window.watch.flv.video; return v.currentTime > 0.5"), 40,
                           interval=0.3, what="the audience page playing (muted)")
                assert js(d, "return window.watch.flv.video.muted") is True
                assert d.find_element("id", "unmute").is_displayed()  # stays while there is no sound
                assert overflow(d) == [], (size, lang, overflow(d))
                shot(d, f"audience-muted-{size}-{lang}")
        viewport(d, "laptop")
        d.get(f"{api.base_url}/console/watch.html?key={room['stream_key']}&lang=en")
        wait_until(lambda: js(d, "return window.watch.flv.video.currentTime > 0.5"), 40, what="playing muted")
        time.sleep(1.5)
        assert d.find_element("id", "unmute").is_displayed()
        click_corner(d)  # one click anywhere (not on the overlay)
        wait_until(lambda: not d.find_element("id", "unmute").is_displayed(), 10, what="the overlay gone once sound plays")
        assert js(d, "return window.watch.flv.video.muted") is False
        # Quiet first (an earlier test's reply may still be playing), then the room speaks.
        api.post(f"/v1/rooms/{room['id']}/interrupt")
        wait_until(lambda: api.get(f"/v1/rooms/{room['id']}").json()["state"] == "idle", 20, what="the room idle")
        time.sleep(1.5)  # what the page plays is ~0.4 s behind the room
        since = js(d, "return Date.now()")
        quiet = js(d, "return window.watch.flv.meter.maxSince(Date.now() - 700)")
        api.post(f"/v1/rooms/{room['id']}/say", json={"text": SENTENCE})
        wait_until(lambda: js(d, "return document.querySelector('#status').dataset.state") == "speaking", 30,
                   interval=0.2, what="the page saying the room speaks")
        level = wait_until(lambda: (v := js(d, "return window.watch.flv.meter.maxSince(arguments[0])", since)) > 0.03 and v,
                           30, interval=0.1, what="the room's speech in the page's audio")
        assert level > 10 * max(quiet, 0.001), (quiet, level)
        shot(d, "audience-speaking-laptop-en")
        viewport(d, "phone")
        d.get(f"{api.base_url}/console/watch.html?key={room['stream_key']}&lang=zh")
        wait_until(lambda: js(d, "return window.watch.flv.video.currentTime > 0.5"), 40, what="playing")
        click_corner(d)
        api.post(f"/v1/rooms/{room['id']}/say", json={"text": ZH_SENTENCE})
        wait_until(lambda: js(d, "return document.querySelector('#status').dataset.state") == "speaking", 30,
                   interval=0.2, what="speaking")
        time.sleep(1.0)
        shot(d, "audience-speaking-phone-zh")
        api.post(f"/v1/rooms/{room['id']}/interrupt")
        assert not [e for e in console_errors(d) if "favicon" not in e], console_errors(d)
    finally:
        d.quit()


def test_the_audience_page_says_offline_and_reconnects(api, service):
    if find_browser() is None:
        pytest.skip("chromium and chromium-driver are not installed")
    r = api.post("/v1/rooms", json={"username": "fit_closing", "language": "en"})
    closing = r.json()
    d = chromium(autoplay_sound=False)
    try:
        d.get(f"{api.base_url}/console/watch.html?key={closing['stream_key']}")
        wait_until(lambda: js(d, "return document.querySelector('#status').dataset.state") == "live", 60,
                   interval=0.3, what="live")
        api.delete(f"/v1/rooms/{closing['id']}")
        wait_until(lambda: js(d, "return document.querySelector('#status').dataset.state") == "offline", 15,
                   interval=0.3, what="offline once the room closed")
        # The player keeps trying (backing off), so the picture comes back by itself if the room does.
        wait_until(lambda: js(d, "return window.watch.flv.player.reconnects") >= 1, 15, what="a reconnection attempt")
    finally:
        d.quit()


def teardown_module(module):
    copy_screenshots(ARTIFACTS)
