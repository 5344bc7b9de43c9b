"""The dashboard in headless Chromium, against a database filled by ingest."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from control_plane.storage import Storage
from tests.dashboard.dashboard_server import serve_dashboard

WAIT_S = 30
SCREENSHOT = "/tmp/fleet.png"

pytestmark = pytest.mark.browser


def _wait_for_text(browser: WebDriver, selector: str, text: str) -> WebElement:
    WebDriverWait(browser, WAIT_S).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text)
    )
    return browser.find_element(By.CSS_SELECTOR, selector)


def test_browser_fleet_page_shows_agent_and_machines(
    browser,
    fleet_storage: Storage,  # type: ignore[no-untyped-def]
) -> None:
    with serve_dashboard(fleet_storage) as base_url:
        browser.get(base_url + "/")
        agents = _wait_for_text(browser, "#agents-table", "plant-a-agent")
        machines = _wait_for_text(browser, "#machines-table", "m-002")
        alerts = _wait_for_text(browser, "#alerts-table", "raised")
        browser.save_screenshot(SCREENSHOT)

        assert "up" in agents.text
        rows = machines.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == [
            "m-001",
            "m-002",
        ]
        assert "93.0%" in rows[0].text
        assert "Power Failure" in alerts.text


def test_browser_machine_page_renders_risk_graph(
    browser,
    fleet_storage: Storage,  # type: ignore[no-untyped-def]
) -> None:
    with serve_dashboard(fleet_storage) as base_url:
        browser.get(base_url + "/")
        link = _wait_for_text(browser, "#machines-table", "m-001").find_element(
            By.LINK_TEXT, "m-001"
        )
        link.click()
        WebDriverWait(browser, WAIT_S).until(
            lambda driver: driver.find_elements(
                By.CSS_SELECTOR, "#machine-risk-graph .scatterlayer .trace"
            )
        )

        assert browser.current_url == base_url + "/machines/plant-a/m-001"
        assert (
            "Machine m-001 at plant-a" in browser.find_element(By.TAG_NAME, "h1").text
        )
        points = browser.find_elements(
            By.CSS_SELECTOR, "#machine-risk-graph .scatterlayer .point"
        )
        assert len(points) == 2
        assert browser.find_elements(
            By.CSS_SELECTOR, "#machine-measurements-graph .scatterlayer .trace"
        )
