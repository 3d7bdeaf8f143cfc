"""The page at `/` in a real headless Chromium: typed text in, highlighted entities out, exactly
the spans /predict gives (text, type, order), offsets right past an emoji."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_serve import running

import nlpfw

httpx = pytest.importorskip("httpx")
from nlpfw.serve.app import create_app  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def chromium() -> tuple[str, str]:
    """(browser, driver) from the system packages; missing is a failure in CI, a skip elsewhere."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        message = "Chromium and chromedriver are needed (apt-get install chromium chromium-driver; .ci/run installs them)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        import selenium  # noqa: F401
    except ImportError:
        (pytest.fail if IN_CI else pytest.skip)("selenium is needed: pip install -e '.[test]'")
    return browser, driver


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900", "--lang=zh-CN"):  # fmt: skip
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))  # no Selenium Manager download
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_the_page_highlights_the_entities_of_predict(run_dir, data_root, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from nlpfw_plugins.cluener import Cluener, CluenerConfig

    model = nlpfw.load(run_dir)
    dev = [e.text for e in Cluener(CluenerConfig(limit=100), data_root).load("dev")]
    typed = [r["text"] for r in model.predict(dev) if len(r["entities"]) >= 2][:2]
    assert len(typed) == 2
    emoji = "😀Café " + typed[0]  # an astral character first: the page must count code points, as Python does
    with running(create_app(model)) as base:
        expected = httpx.post(f"{base}/predict", json={"texts": [*typed, emoji]}).json()
        browser.get(f"{base}/")
        WebDriverWait(browser, 10).until(lambda b: "bert.v1" in b.find_element(By.ID, "model").text)
        box = browser.find_element(By.ID, "input")
        box.send_keys("\n".join(typed))  # typed, key by key
        # chromedriver types only the Basic Multilingual Plane: the emoji line is added as a paste would
        browser.execute_script("arguments[0].value += '\\n' + arguments[1];", box, emoji)
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 20).until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "3 texts"))
        records = browser.find_elements(By.CSS_SELECTOR, "#results .record")
        assert len(records) == 3
        for record, want in zip(records, expected):
            marks = record.find_elements(By.CSS_SELECTOR, "mark.entity")
            shown = [
                (m.find_element(By.CLASS_NAME, "entity-text").text, m.get_attribute("data-type"),
                 m.find_element(By.CLASS_NAME, "entity-label").text.lower(), int(m.get_attribute("data-start")))
                for m in marks
            ]  # fmt: skip
            assert shown == [(e["text"], e["type"], e["type"], e["start"]) for e in want["entities"]]
            colours = {m.get_attribute("data-type"): m.value_of_css_property("background-color") for m in marks}
            assert len(set(colours.values())) == len(colours)  # a colour per type
        # the whole text is shown in place, entities where their offsets say (past the emoji too)
        shown_text = browser.execute_script(
            "return Array.from(arguments[0].childNodes, n => n.nodeType === 3 ? n.textContent"
            " : n.querySelector('.entity-text').textContent).join('');",
            records[2].find_element(By.CLASS_NAME, "text"),
        )
        assert shown_text == emoji
        assert any(e["start"] > 6 for e in expected[2]["entities"])  # an entity after the emoji
        screenshot = tmp_path / "page.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        print(f"screenshot: {screenshot}")
