"""The dashboard in real headless Chromium against a real `marina up`.

Screenshots of the main pages are saved under artifacts/screenshots.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
XSS = "<img src=x onerror=\"document.title='pwned'\">"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(
    downloads: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Debian packages chromium and chromium-driver are required")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome')}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield browser
    browser.quit()


def wait(browser: webdriver.Chrome, condition, timeout: float = 60):
    return WebDriverWait(
        browser,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition)


def shot(browser: webdriver.Chrome, name: str) -> None:
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def text_of(browser: webdriver.Chrome, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def object_row(browser: webdriver.Chrome, name: str):
    return browser.find_element(By.CSS_SELECTOR, f'li[data-object="{name}"]')


def run_action(browser: webdriver.Chrome, obj: str, action: str) -> str:
    """Click an object's action; wait for its task to finish; the result text."""
    row = wait(browser, lambda b: object_row(b, obj))
    row.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').click()
    wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#task-result p")), 120)
    return text_of(browser, "#task-result p")


def add_from_catalog(browser: webdriver.Chrome, package: str, values: dict[str, str]) -> None:
    browser.get(browser.current_url.split("#")[0] + "#/catalog")
    card = wait(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, f'article[data-name="{package}"]')
    )
    card.find_element(By.CSS_SELECTOR, "button[data-package]").click()
    for name, value in values.items():
        field = card.find_element(By.ID, f"prop-{package}-{name}")
        field.clear()
        field.send_keys(value)
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_login_with_the_keyboard(marina, browser):
    browser.get(marina.api + "/")
    token = wait(browser, ec.presence_of_element_located((By.ID, "token")))
    shot(browser, "login")
    token.send_keys("mar_not-a-token", Keys.ENTER)
    wait(browser, lambda b: "not known" in b.page_source)
    token.clear()
    token.send_keys(marina.token, Keys.ENTER)
    wait(browser, ec.presence_of_element_located((By.ID, "new-env")))
    shot(browser, "environments")


def test_environment_with_script_in_its_name_is_shown_as_text(marina, browser):
    field = browser.find_element(By.ID, "new-env")
    field.send_keys(f"shop {XSS}", Keys.ENTER)
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == f"shop {XSS}")
    assert browser.title == "Marina"
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")


def test_catalog_form_shows_server_validation_next_to_fields(marina, browser):
    add_from_catalog(
        browser, "kubernetes-cluster", {"name": "k1", "nodeCount": "9", "maxNodes": "5"}
    )
    error = wait(
        browser,
        lambda b: b.find_element(By.ID, "prop-kubernetes-cluster-nodeCount-error").text or None,
    )
    assert "maxNodes" in error
    shot(browser, "catalog")
    card = browser.find_element(By.CSS_SELECTOR, 'article[data-name="kubernetes-cluster"]')
    field = card.find_element(By.ID, "prop-kubernetes-cluster-nodeCount")
    field.clear()
    field.send_keys("2")
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda b: object_row(b, "k1"))
    env_url = browser.current_url
    add_from_catalog(browser, "guestbook", {"title": f"Guests {XSS}"})
    wait(browser, lambda b: b.current_url == env_url and object_row(b, "web"))


def test_deploy_scale_and_follow_the_public_link(marina, browser):
    assert "4 nodes ready" in run_action(browser, "k1", "deploy")
    steps = object_row(browser, "minion-1").text
    assert "✓ deployInstance" in steps and "✓ setupNode" in steps
    assert "2 pods deployed" in run_action(browser, "Guestbook", "deploy")
    assert "Changed: 2 replicas" in run_action(browser, "web", "scalePodUp")
    wait(browser, lambda b: "replicas 2/2 ready" in object_row(b, "web").text)
    assert "succeeded" in text_of(browser, "#task-state")
    shot(browser, "environment")
    link = wait(browser, lambda b: object_row(b, "web").find_element(By.CSS_SELECTOR, "a.endpoint"))
    href = link.get_attribute("href")
    main = browser.current_window_handle
    link.click()
    wait(browser, lambda b: len(b.window_handles) == 2)
    browser.switch_to.window(next(h for h in browser.window_handles if h != main))
    wait(browser, lambda b: "Guests" in b.find_element(By.TAG_NAME, "h1").text)
    assert browser.title.startswith("Guests <img")  # the application escapes it too
    assert browser.current_url == href
    browser.close()
    browser.switch_to.window(main)


def test_export_config_downloads_the_archive(marina, browser, downloads):
    assert "manifests" in run_action(browser, "k1", "exportConfig")
    button = wait(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, "#task-result button.download"), 5
    )
    name = button.get_attribute("data-file")
    assert name.endswith(".tar.gz")
    button.click()
    target = downloads / name
    deadline = time.monotonic() + 30
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with tarfile.open(target) as archive:
        assert "apply.sh" in archive.getnames()


def test_changes_made_elsewhere_appear_without_a_reload(marina, browser):
    browser.execute_script("window.__marker = 'same page'")
    env = browser.current_url.rsplit("/", 1)[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "catalog.cli",
            "--state-dir",
            str(marina.state_dir),
            "action",
            "run",
            env,
            "web:scalePodDown",
            "--wait",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    wait(browser, lambda b: "replicas 1/1 ready" in object_row(b, "web").text, 10)
    wait(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, "#tasks tbody tr").text.startswith(
            "scalePodDown"
        ),
        10,
    )
    assert browser.execute_script("return window.__marker") == "same page"


def test_actions_with_arguments_get_a_form_and_errors_are_readable(marina, browser):
    row = object_row(browser, "web")
    row.find_element(By.CSS_SELECTOR, 'button[data-action="scalePod"]').click()
    field = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#task-panel input"))
    field.clear()
    field.send_keys("99", Keys.ENTER)
    error = wait(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, "#task-panel .field-error").text or None
    )
    assert "50" in error and "Traceback" not in browser.page_source


def test_another_project_sees_none_of_it(marina, browser):
    env_url = browser.current_url
    other = marina.ok("POST", "/v1/tokens", {"project": "elsewhere"})["token"]
    browser.find_element(By.ID, "logout").click()
    token = wait(browser, ec.presence_of_element_located((By.ID, "token")))
    token.send_keys(other, Keys.ENTER)
    wait(browser, lambda b: "No environments yet." in b.find_element(By.TAG_NAME, "main").text)
    browser.get(env_url)
    wait(browser, lambda b: "not found" in b.find_element(By.ID, "flash").text)
    assert not browser.find_elements(By.ID, "tree")
