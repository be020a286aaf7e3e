"""A real headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium, for the
browser tests and bench.browser_latency. Nothing is downloaded: the system browser and driver
are given by path, and Selenium Manager is kept offline."""

from __future__ import annotations

import os
import shutil

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver",)
EXTRA_DRIVER_PATHS = ("/usr/lib/chromium/chromedriver",)


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when the system has no Chromium with its driver."""
    browser = next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_CANDIDATES) if p), None) or next(
        (p for p in EXTRA_DRIVER_PATHS if os.access(p, os.X_OK)), None)
    return (browser, driver) if browser and driver else None


def chromium(width: int = 1440, height: int = 960, log_console: bool = True, autoplay_sound: bool = True,
             lang: str | None = None, extra_args: tuple[str, ...] = ()):
    """A headless Chromium that autoplays media with sound (WebAudio runs on a null output); with
    autoplay_sound=False, the browser's own policy: sound only after the page was interacted with;
    `lang` (e.g. "zh-CN"): the languages the browser asks pages for (navigator.languages);
    `extra_args`: more switches (e.g. a fake microphone playing a file)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise FileNotFoundError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    browser, driver = found
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", "--no-first-run", "--disable-extensions",
                "--disable-component-update", "--disable-sync", "--metrics-recording-only",
                "--disable-default-apps", "--no-default-browser-check", *extra_args):
        options.add_argument(arg)
    if autoplay_sound:
        options.add_argument("--autoplay-policy=no-user-gesture-required")
    if lang:
        options.add_argument(f"--lang={lang}")
        options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    if log_console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def console_errors(driver) -> list[str]:
    """Severe messages of the page's console since the last call (script errors, failed loads)."""
    try:
        return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    except Exception:
        return []
