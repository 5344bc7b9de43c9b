"""The models pages in headless Chromium, with a registered quick model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from control_plane.storage import Storage
from tests.dashboard.dashboard_server import serve_dashboard
from tests.dashboard.test_dashboard_browser import WAIT_S, _wait_for_text

SCREENSHOT = "/tmp/model_card.png"

pytestmark = pytest.mark.browser


def test_browser_models_page_lists_version(
    browser: WebDriver, models_storage: Storage
) -> None:
    with serve_dashboard(models_storage) as base_url:
        browser.get(base_url + "/")
        _wait_for_text(browser, "#fleet-model-version", "v1")
        browser.find_element(By.ID, "models-link").click()
        table = _wait_for_text(browser, "#models-table", "v2")

        assert browser.current_url == base_url + "/models"
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == [
            "v2",
            "v1",
        ]
        assert "accepted" in rows[1].text
        assert "fleet" in rows[1].text


def test_browser_model_page_shows_card(
    browser: WebDriver, models_storage: Storage, model_store_root: Path
) -> None:
    card = json.loads((model_store_root / "v1" / "model_card.json").read_text())
    with serve_dashboard(models_storage) as base_url:
        browser.get(base_url + "/models")
        _wait_for_text(browser, "#models-table", "v1").find_element(
            By.LINK_TEXT, "v1"
        ).click()
        metrics = _wait_for_text(browser, "#model-metrics-table", "failure F1")
        WebDriverWait(browser, WAIT_S).until(
            lambda driver: driver.find_elements(
                By.CSS_SELECTOR, "#model-pr-graph .scatterlayer .trace"
            )
        )
        # A tall window puts the whole card into one screenshot.
        browser.set_window_size(1280, 4400)
        browser.save_screenshot(SCREENSHOT)

        assert browser.current_url == base_url + "/models/1"
        assert len(metrics.find_elements(By.CSS_SELECTOR, "tbody tr")) == 4
        f1 = card["evaluation"]["metrics"][0]
        assert f"{f1['label']} {f1['value']:.3f}" in metrics.text
        assert browser.find_elements(
            By.CSS_SELECTOR, "#model-reliability-graph .scatterlayer .trace"
        )


def test_browser_model_page_missing_card(
    browser: WebDriver, models_storage: Storage
) -> None:
    with serve_dashboard(models_storage) as base_url:
        browser.get(base_url + "/models/2")
        message = _wait_for_text(browser, "#model-card-missing", "not found")

        assert "model_card.json" in message.text
        assert not browser.find_elements(By.ID, "model-card")
