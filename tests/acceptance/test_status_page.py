"""The status page (issue 15) in a real headless Chromium against a running `filesync daemon`: the numbers it
shows are the ledger's, its retry button puts a parked file back to pending, its progress bar follows a live
run, and it fits a phone's width. Debian's `chromium` and `chromium-driver` (installed by .ci/run), driven by
Selenium with the driver named explicitly, so Selenium Manager never downloads anything; without them the
tests are skipped with the reason.

STATUS_PAGE_SCREENSHOT=docs/status-page.png also writes the README's screenshot (a small palette PNG).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.daemon_support import Daemon, query, seed, wait_until
from tests.acceptance.test_api import FILES, RUNS, TOKEN, GatedBunny, ledger_counts, migrate, seed_ledger, start

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) and os.access(path, os.X_OK)):
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1800",
                "--lang=en-US", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run"):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def _enter_token(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    wait_until(lambda: driver.find_element(By.ID, "access").is_displayed(), 30, "the page to ask for the token")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    wait_until(lambda: driver.execute_script("return document.body.dataset.loaded") == "true", 30, "the data")


def _screenshot(driver: Any, path: Path) -> None:
    assert driver.save_screenshot(str(path)), "no screenshot"
    assert path.stat().st_size > 1000
    wanted = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if wanted:  # the README's copy: cut to the page's height, as a palette PNG that stays small
        from PIL import Image

        height = int(driver.execute_script(
            "return Math.ceil((document.body.getBoundingClientRect().bottom + 16) * window.devicePixelRatio)"))
        image = Image.open(path).convert("RGB")
        image.crop((0, 0, image.width, min(height, image.height))).quantize(colors=64).save(wanted, optimize=True)


def _destination_counts(database_url: str) -> dict[str, dict[str, int]]:
    """Transfers per destination and operator's state, counted in the test's own SQL."""
    rows = query(database_url, """
        SELECT coalesce(t.sink, '-'),
               CASE WHEN t.state IN ('done', 'failed') THEN t.state
                    WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
                    WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
                    ELSE f.state END, count(*)
        FROM filesync.files f LEFT JOIN filesync.transfers t USING (file_id) GROUP BY 1, 2""")
    found: dict[str, dict[str, int]] = {}
    for sink, state, n in rows:
        found.setdefault(sink, {})[state] = int(n)
    return found


def test_page_shows_the_ledger_and_retries_from_its_button(browser: Any, tmp_path: Path, database_url: str) -> None:
    from selenium.webdriver.common.by import By

    seed_ledger(tmp_path, database_url)
    daemon = start(tmp_path, database_url, FILESYNC_HTTP_TOKEN=TOKEN)
    try:
        browser.get(f"http://127.0.0.1:{daemon.port}/")
        # Reads need the token once one is set: the page asks for it, and again when it is refused.
        wait_until(lambda: browser.find_element(By.ID, "access").is_displayed(), 30, "the page to ask for the token")
        browser.find_element(By.ID, "token").send_keys(TOKEN + "-wrong")
        browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        wait_until(lambda: "401" in _text(browser, "#updated") or "needs" in _text(browser, "#updated"), 30,
                   "the refusal")
        assert browser.execute_script("return sessionStorage.getItem('filesync.token')") is None
        _enter_token(browser)
        assert browser.execute_script("return sessionStorage.getItem('filesync.token')") == TOKEN

        counts = ledger_counts(database_url)
        shown = {dd.get_attribute("data-count"): int(dd.text) for dd in _all(browser, "#counts dd")}
        assert shown == {**counts, "backlog": counts["pending"] + counts["in_progress"] + counts["waiting"]}
        table = {row.get_attribute("data-sink"): {td.get_attribute("data-state"): int(td.text)
                                                  for td in row.find_elements(By.TAG_NAME, "td")}
                 for row in _all(browser, "#destinations tbody tr")}
        expected = _destination_counts(database_url)
        assert {sink: {k: v for k, v in states.items() if v} for sink, states in table.items()} == expected

        bars = _all(browser, "#chart rect.bar")
        assert [int(b.get_attribute("data-copied")) for b in bars] == [copied for _, copied, _ in RUNS]
        assert "last 3 runs" in _text(browser, "#chart-caption")
        assert "No run is going" in _text(browser, "#run-idle")

        rows = [[td.text for td in row.find_elements(By.TAG_NAME, "td")][:4]
                for row in _all(browser, "#failures tbody tr")]
        assert rows == [["photos/2024/broken.png", "cloudflare-images", "HTTP 400: image is corrupt", "5"],
                        ["photos/2022/gone.png", "—", "not found in bucket", "1"]]
        links = {a.text + " " + a.get_attribute("href") for a in _all(browser, "#copied a")}
        urls = {f"{sink} {url}" for fid, _, state, *_, transfers in FILES if state == "done"
                for sink, _, _, _, url, _ in transfers if url}
        assert links == urls and len(urls) == 3
        assert "photos/2023/forest.png" in _text(browser, "#copied")  # copied, with no public URL: no link

        # The search box narrows the failures table.
        browser.find_element(By.ID, "failures-q").send_keys("GONE")
        wait_until(lambda: [r.get_attribute("data-file") for r in _all(browser, "#failures tbody tr")] == ["f2"],
                   30, "the search to narrow the table")
        browser.find_element(By.ID, "failures-q").clear()
        browser.find_element(By.ID, "failures-q").send_keys(" ")
        wait_until(lambda: len(_all(browser, "#failures tbody tr")) == 2, 30, "both failures again")
        _screenshot(browser, tmp_path / "status-page.png")

        # Retry one file from its row: it is pending again, and the page's numbers follow.
        row = next(r for r in _all(browser, "#failures tbody tr") if r.get_attribute("data-file") == "f1")
        row.find_element(By.CSS_SELECTOR, "button.retry").click()
        wait_until(lambda: "1 file(s) queued again" in _text(browser, "#failures-message"), 30, "the retry")
        f1 = query(database_url, "SELECT state, attempts FROM filesync.files WHERE file_id = 'f1'")
        assert f1 == [("pending", 0)]
        wait_until(lambda: _text(browser, "#counts dd[data-count=failed]") == "1", 30, "the failed count to drop")
        assert _text(browser, "#counts dd[data-count=pending]") == str(ledger_counts(database_url)["pending"]) == "3"
        assert [r.get_attribute("data-file") for r in _all(browser, "#failures tbody tr")] == ["f2"]

        # Retry all: the table empties.
        browser.find_element(By.ID, "retry-all").click()
        wait_until(lambda: _text(browser, "#failures tbody") == "No failures.", 30, "the failures table to empty")
        assert ledger_counts(database_url)["failed"] == 0

        # Phone width: nothing wider than the screen (wide tables scroll inside their own box).
        browser.set_window_size(390, 844)
        wait_until(lambda: browser.execute_script("return window.innerWidth") <= 390, 10, "the narrow window")
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        _screenshot_phone = tmp_path / "status-page-phone.png"
        assert browser.save_screenshot(str(_screenshot_phone))
    finally:
        daemon.kill()


def test_run_now_from_the_page_and_its_progress_bar_follows_the_run(browser: Any, tmp_path: Path,
                                                                database_url: str) -> None:
    from selenium.webdriver.common.by import By

    migrate(tmp_path, database_url)
    seed(database_url, tmp_path / "src", {"big-1": 12 * 1024 * 1024, "big-2": 1024 * 1024})
    with GatedBunny() as fake:
        assert isinstance(fake, GatedBunny)
        daemon: Daemon = start(tmp_path, database_url, FILESYNC_HTTP_TOKEN=TOKEN, FILESYNC_ROUTES="image/*=bunny",
                               BUNNY_ENDPOINT=fake.url, BUNNY_STORAGE_ZONE=fake.zone, BUNNY_API_KEY=fake.access_key,
                               FILESYNC_CONCURRENCY="1")
        try:
            browser.get(f"http://127.0.0.1:{daemon.port}/")
            _enter_token(browser)
            browser.find_element(By.ID, "run-now").click()
            wait_until(lambda: browser.find_element(By.ID, "run-live").is_displayed(), 60, "the progress bar")
            bar = browser.find_element(By.ID, "run-progress")
            assert bar.get_attribute("max") == "2" and bar.get_attribute("value") == "0"
            wait_until(lambda: "files/s" in _text(browser, "#run-text") and "MiB" in _text(browser, "#run-text"),
                       30, "rate and bytes")
            assert _text(browser, "#run-text").startswith("0 of 2 files")
            assert browser.find_element(By.ID, "run-now").get_attribute("disabled") is not None
            fake.gate.set()
            wait_until(lambda: not browser.find_element(By.ID, "run-live").is_displayed(), 120, "the run to end")
            wait_until(lambda: _text(browser, "#counts dd[data-count=done]") == "2", 30, "two files done")
            assert "2 copied" in _text(browser, "#run-idle")
            assert [b.get_attribute("data-copied") for b in _all(browser, "#chart rect.bar")] == ["2"]
        finally:
            fake.gate.set()
            daemon.kill()

