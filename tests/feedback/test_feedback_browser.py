"""A real browser (Debian's headless chromium through Selenium) labels with the keyboard only.

Logs in, labels items with the keys shown on the page, undoes one answer and gives a new one, skips one,
checks that a candidate containing ``<script>`` is shown as text and never runs, and checks the export
the admin downloads. Skipped only when chromium/chromedriver are missing and CI is not "true"; on CI a
missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.web

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HOSTILE = "<script>window.__pwned = 1;</script><b>not bold</b>"


def _browser_available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


if not _browser_available():
    if os.environ.get("CI") == "true":
        raise RuntimeError(
            f"CI=true but {CHROMIUM} or {CHROMEDRIVER} is missing; install chromium and chromium-driver"
        )
    pytest.skip(
        "chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

import uvicorn
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from rlhfkit.data.preferences import pair_to_trl
from rlhfkit.feedback.annotators import add_annotator
from rlhfkit.feedback.app import create_app
from rlhfkit.feedback.export import live_labels, preference_pairs
from rlhfkit.feedback.items import add_comparisons
from rlhfkit.feedback.store import FeedbackStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, FeedbackStore, str]]:
    store = FeedbackStore.create(tmp_path / "browser.sqlite", overlap=1, name="browser-test")
    add_comparisons(
        store,
        [f"#Person1#: dialogue {i}\n#Person2#: reply {i}" for i in range(6)],
        [[HOSTILE if i == 0 else f"calm summary {i}", f"other summary {i}"] for i in range(6)],
    )
    _, token = add_annotator(store, "alice", admin=True)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", store, token
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def press(driver: webdriver.Chrome, *keys: str) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def current_item(driver: webdriver.Chrome) -> dict[str, str]:
    form = driver.find_element(By.ID, "label-form")
    return {
        "id": form.get_attribute("data-item-id"),
        "left": driver.find_element(By.ID, "text-left").text,
        "right": driver.find_element(By.ID, "text-right").text,
    }


def press_and_wait(driver: webdriver.Chrome, *keys: str) -> None:
    """Press keys whose last one submits a form, and wait until the next page has loaded.

    The old document is marked with a script variable that the next document does not have. While Chrome
    swaps documents, any DOM or script call can fail with a generic WebDriverException ("Node with given
    id does not belong to the document"), not only StaleElementReferenceException, so the wait ignores
    those errors and polls again.
    """
    driver.execute_script("window.__rlhfkitOldPage = true")
    press(driver, *keys)
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.__rlhfkitOldPage === undefined && document.readyState === 'complete'"
        )
    )


def test_keyboard_labeling_with_undo_skip_and_export(
    served: tuple[str, FeedbackStore, str], browser: webdriver.Chrome
) -> None:
    base, store, token = served
    browser.get(f"{base}/login")
    browser.find_element(By.ID, "token").send_keys(token + Keys.ENTER)
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "label-form")))
    assert browser.find_element(By.ID, "remaining-count").text == "6"
    assert "Shift+A" in browser.find_element(By.ID, "key-help").text

    # Item 1 holds the hostile candidate: shown as text, never executed.
    first = current_item(browser)
    assert HOSTILE in (first["left"], first["right"])
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, ".candidate b") == []

    press_and_wait(browser, "a", "2", Keys.ENTER)  # A (left) clearly better
    assert "Saved" in browser.find_element(By.ID, "notice").text
    second = current_item(browser)
    assert second["id"] != first["id"]
    press_and_wait(browser, "b", "3", Keys.ENTER)  # B (right) much better ...

    press_and_wait(browser, "u")  # ... undone: the same item comes back with that answer selected
    assert current_item(browser) == second
    assert browser.find_element(By.ID, "choice-right").is_selected()
    assert browser.find_element(By.ID, "strength-3").is_selected()
    press_and_wait(browser, "a", "1", Keys.ENTER)  # changed to: A slightly better

    skipped = current_item(browser)
    press_and_wait(browser, "s")
    assert current_item(browser)["id"] != skipped["id"]
    assert browser.find_element(By.ID, "skipped-count").text == "1"

    press(browser, "b")  # a preference without a strength is caught before it is sent
    press(browser, Keys.ENTER)
    assert "how much better" in browser.find_element(By.ID, "client-error").text.lower()
    press_and_wait(browser, "t", Keys.ENTER)  # tie
    toxic_item = current_item(browser)
    press_and_wait(browser, "x", "A", Keys.ENTER)  # both bad, A flagged toxic
    assert browser.find_element(By.ID, "done-count").text == "4"
    assert browser.find_element(By.ID, "remaining-count").text == "1"

    # The admin's export, fetched by the logged-in browser.
    exported = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/admin/export/pairs.jsonl').then(r => r.text()).then(done);"
    )
    lines = [json.loads(line) for line in exported.splitlines()]
    assert lines == [
        {"prompt": lines[0]["prompt"], "chosen": first["left"], "rejected": first["right"], "margin": 2.0},
        {"prompt": lines[1]["prompt"], "chosen": second["left"], "rejected": second["right"], "margin": 1.0},
    ]
    assert lines == [pair_to_trl(p) for p in preference_pairs(store)]

    labels = {r.item_id: r for r in live_labels(store, include_skips=True)}
    assert labels[int(skipped["id"])].choice == "skip"
    both_bad = labels[int(toxic_item["id"])]
    assert both_bad.choice == "both_bad"
    assert both_bad.toxic == ((True, False) if both_bad.first_on_left else (False, True))
