"""The dashboard in real headless Chromium against a real `marina up`.

Every view is checked with axe-core (vendored in `vendor/`); screenshots of
the main pages are saved under artifacts/screenshots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
TRANSLATORS = ROOT / "tests" / "data" / "translators"
XSS = "<img src=x onerror=\"document.title='pwned'\">"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


def start_chromium(profile: Path, downloads: Path) -> webdriver.Chrome:
    """Headless Debian Chromium, downloading into `downloads` without asking."""
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
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(30)
    browser.set_script_timeout(60)
    return browser


@pytest.fixture(scope="module")
def browser(
    downloads: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    browser = start_chromium(tmp_path_factory.mktemp("chrome"), downloads)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield browser
    browser.quit()


def wait(browser: webdriver.Chrome, condition, timeout: float = 60):
    return WebDriverWait(
        browser,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(
            NoSuchElementException,
            StaleElementReferenceException,
            ElementNotInteractableException,  # redrawn between being found and used
        ),
    ).until(condition)


def shot(browser: webdriver.Chrome, name: str) -> None:
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def accessibility_violations(browser: webdriver.Chrome) -> list[dict[str, object]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not browser.execute_script("return typeof window.axe === 'object'"):
        browser.execute_script(AXE.read_text())
    found = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ["violations"]}).then((r) => done(r.violations
          .filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" "))}))))
          .catch((e) => done([{id: "axe-error", help: String(e)}]));
        """
    )
    return list(found)


def assert_accessible(browser: webdriver.Chrome, view: str) -> None:
    violations = accessibility_violations(browser)
    assert not violations, f"{view}: {json.dumps(violations, indent=1)}"


def text_of(browser: webdriver.Chrome, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def object_row(browser: webdriver.Chrome, name: str):
    return browser.find_element(By.CSS_SELECTOR, f'li[data-object="{name}"]')


def current_task(browser: webdriver.Chrome) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, "#task-state code")
    return str(found[0].text) if found else ""


def click_action(browser: webdriver.Chrome, obj: str, action: str) -> None:
    """Press the button, found afresh if live updates redrew its row first
    (a click on a replaced element is refused before it happens)."""

    def press(b: webdriver.Chrome) -> bool:
        object_row(b, obj).find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').click()
        return True

    wait(browser, press)


def wait_result(browser: webdriver.Chrome, before: str) -> str:
    """The result text of the task the panel follows once it is not `before`."""
    wait(
        browser,
        lambda b: (
            current_task(b) not in ("", before)
            and b.find_element(By.CSS_SELECTOR, "#task-result p")
        ),
        120,
    )
    return text_of(browser, "#task-result p")


def run_action(browser: webdriver.Chrome, obj: str, action: str) -> str:
    """Click an object's action; wait for its task to finish; the result text."""
    before = current_task(browser)
    click_action(browser, obj, action)
    return wait_result(browser, before)


def env_id(browser: webdriver.Chrome) -> str:
    return str(browser.current_url.rsplit("/", 1)[1])


def add_from_catalog(browser: webdriver.Chrome, package: str, values: dict[str, str]) -> None:
    open_package_form(browser, package)
    card = browser.find_element(By.CSS_SELECTOR, f'article[data-name="{package}"]')
    for name, value in values.items():
        field = card.find_element(By.ID, f"prop-{package}-{name}")
        field.clear()
        field.send_keys(value)
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def open_package_form(browser: webdriver.Chrome, package: str):
    browser.get(browser.current_url.split("#")[0] + "#/catalog")
    card = wait(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, f'article[data-name="{package}"]')
    )
    card.find_element(By.CSS_SELECTOR, "button[data-package]").click()
    return card


def test_login_with_the_keyboard(marina, browser):
    browser.get(marina.api + "/")
    token = wait(browser, ec.presence_of_element_located((By.ID, "token")))
    assert browser.switch_to.active_element == token
    assert_accessible(browser, "login")
    shot(browser, "login")
    token.send_keys("mar_not-a-token", Keys.ENTER)
    wait(browser, lambda b: "not known" in b.page_source)
    token.clear()
    token.send_keys(marina.token, Keys.ENTER)
    wait(browser, ec.presence_of_element_located((By.ID, "new-env")))
    assert_accessible(browser, "environments, none yet")
    shot(browser, "environments")


def test_environment_with_script_in_its_name_is_shown_as_text(marina, browser):
    field = browser.find_element(By.ID, "new-env")
    field.send_keys(f"shop {XSS}", Keys.ENTER)
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == f"shop {XSS}")
    assert browser.title == f"shop {XSS} — Marina"
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")


def test_catalog_form_follows_ui_order(marina, browser):
    packages = marina.ok("GET", "/v1/catalog/packages")["packages"]
    for package in ("kubernetes-cluster", "guestbook"):
        order = next(p for p in packages if p["name"] == package)["ui"]["order"]
        card = open_package_form(browser, package)
        fields = card.find_elements(
            By.CSS_SELECTOR, "input[id^=prop-], select[id^=prop-], textarea[id^=prop-]"
        )
        ids = [f.get_attribute("id") for f in fields]
        assert ids[: len(order)] == [f"prop-{package}-{name}" for name in order]
    assert_accessible(browser, "catalog with a form open")


def test_validation_errors_are_words_not_patterns(marina, browser):
    add_from_catalog(browser, "kubernetes-cluster", {"name": "K1!", "nodeCount": "0"})
    name_error = wait(
        browser,
        lambda b: b.find_element(By.ID, "prop-kubernetes-cluster-name-error").text or None,
    )
    assert name_error == (
        'must be 1 to 32 characters from lower-case letters, digits and "-", '
        "starting and ending with lower-case letters or digits"
    )
    count_error = text_of(browser, "#prop-kubernetes-cluster-nodeCount-error")
    assert count_error == "must be at least 1"
    name = browser.find_element(By.ID, "prop-kubernetes-cluster-name")
    assert name.get_attribute("aria-invalid") == "true"
    assert "prop-kubernetes-cluster-name-error" in name.get_attribute("aria-describedby")
    assert "^[a-z" not in browser.find_element(By.TAG_NAME, "main").text
    assert_accessible(browser, "catalog form with errors")


def test_master_count_is_a_choice_and_the_local_provider_refuses_more(marina, browser):
    card = open_package_form(browser, "kubernetes-cluster")
    field = Select(card.find_element(By.ID, "prop-kubernetes-cluster-masterCount"))
    assert [o.text for o in field.options] == ["1", "3", "5"]
    assert field.first_selected_option.text == "1"
    name = card.find_element(By.ID, "prop-kubernetes-cluster-name")
    name.clear()
    name.send_keys("k3")
    field.select_by_visible_text("3")
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = wait(
        browser,
        lambda b: b.find_element(By.ID, "prop-kubernetes-cluster-masterCount-error").text or None,
    )
    assert error == "the local provider runs one master"
    assert not browser.find_elements(By.CSS_SELECTOR, 'li[data-object="k3"]')
    field.select_by_visible_text("1")  # the next test fills the same form


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
    assert_accessible(browser, "environment")
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
    env = env_id(browser)
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
    assert browser.switch_to.active_element == field
    field.clear()
    field.send_keys("99", Keys.ENTER)
    error = wait(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, "#task-panel .field-error").text or None
    )
    assert error == "must be at most 50"
    assert "Traceback" not in browser.page_source
    assert_accessible(browser, "action form with an error")
    # Fewer replicas than now is a loss: it asks first, naming it.
    field.clear()
    field.send_keys("0", Keys.ENTER)
    dialog = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open]"), 5)
    assert "1 of the 1 replicas of pod web will be stopped" in dialog.text
    dialog.find_element(By.ID, "confirm-cancel").click()
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog"), 5)
    assert "replicas 1/1 ready" in object_row(browser, "web").text


# Records what the task panel shows at every change, so a state that lasts a
# moment is seen without timing anything.
RECORD_PANEL = """
window.__panel = [];
new MutationObserver(() => {
  const badge = document.querySelector("#task-state .state");
  const progress = document.getElementById("task-progress");
  if (!badge || !progress) return;
  window.__panel.push({state: badge.textContent,
                       background: getComputedStyle(badge).backgroundColor,
                       progress: progress.textContent, live: progress.getAttribute("aria-live")});
}).observe(document.getElementById("task-panel"),
           {subtree: true, childList: true, characterData: true});
"""


def test_a_running_task_has_its_own_badge_and_live_progress(marina, browser):
    browser.execute_script(RECORD_PANEL)
    assert "Changed" in run_action(browser, "k1", "scaleNodesUp")
    seen = browser.execute_script("return window.__panel")
    running = [s for s in seen if s["state"] == "running"]
    succeeded = [s for s in seen if s["state"] == "succeeded"]
    assert running and succeeded, seen
    assert running[0]["background"] != succeeded[-1]["background"]
    steps = [s["progress"] for s in running if s["progress"].startswith("Step ")]
    assert len(set(steps)) >= 2, seen  # progress moved while it ran
    assert all(s["live"] == "polite" for s in seen)


def test_destructive_actions_ask_first_naming_what_is_lost(marina, browser):
    env = env_id(browser)
    tasks_before = marina.ok("GET", f"/v1/environments/{env}/tasks")["tasks"]
    button = object_row(browser, "web").find_element(
        By.CSS_SELECTOR, 'button[data-action="scalePodDown"]'
    )
    button.send_keys(Keys.ENTER)
    dialog = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open]"), 5)
    assert "One of the 1 replicas of pod web will be stopped" in dialog.text
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    assert marina.ok("GET", f"/v1/environments/{env}/tasks")["tasks"] == tasks_before
    assert_accessible(browser, "confirmation dialog")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog"), 5)
    assert browser.switch_to.active_element.get_attribute("data-action") == "scalePodDown"
    assert "replicas 1/1 ready" in object_row(browser, "web").text

    before = current_task(browser)
    click_action(browser, "k1", "scaleNodesDown")
    dialog = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open]"), 5)
    assert "One of the 3 worker nodes of cluster k1 will be removed" in dialog.text
    dialog.find_element(By.ID, "confirm-ok").click()
    assert "Changed" in wait_result(browser, before)
    workers = [o for o in marina.objects(env).values() if o["?"]["type"] == "MinionNode"]
    assert len(workers) == 2


def test_recent_tasks_open_to_their_log_and_result(marina, browser):
    first = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")[-1])
    assert first.text.startswith("deploy")
    first.find_element(By.CSS_SELECTOR, "button").send_keys(Keys.ENTER)
    wait(browser, lambda b: "4 nodes ready" in text_of(b, "#task-result"))
    assert browser.switch_to.active_element.get_attribute("id") == "task-heading"
    assert "deploy" in text_of(browser, "#task-heading")
    assert "setupNode" in text_of(browser, "#task-log")


def test_environment_can_be_deleted_after_confirmation(marina, browser):
    env_url = browser.current_url
    scratch = marina.ok("POST", "/v1/environments", {"name": "scratch"})["id"]
    browser.get(env_url.rsplit("/", 1)[0] + "/" + scratch)
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == "scratch")
    browser.find_element(By.ID, "delete-environment").click()
    dialog = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open]"), 5)
    assert "Environment scratch will be torn down" in dialog.text
    assert "cannot be undone" in dialog.text
    dialog.find_element(By.ID, "confirm-ok").click()
    wait(
        browser, lambda b: "Environment scratch was deleted." in b.find_element(By.ID, "flash").text
    )
    assert browser.current_url.endswith("#/environments")
    assert marina.call("GET", f"/v1/environments/{scratch}")[0] == 404
    wait(browser, lambda b: b.find_element(By.ID, "environments"))
    assert "scratch" not in text_of(browser, "main")
    assert_accessible(browser, "environments")
    browser.get(env_url)


def test_an_unknown_environment_gets_a_page_of_its_own(marina, browser):
    wait(browser, lambda b: object_row(b, "web"))
    browser.get(browser.current_url.rsplit("/", 1)[0] + "/no-such-environment")
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == "Environment not found")
    assert "no-such-environment" in text_of(browser, "#not-found")
    assert not browser.find_elements(By.ID, "tree")
    assert_accessible(browser, "unknown environment")


def choose_import(browser: webdriver.Chrome, path: Path, *, name: str = "") -> None:
    browser.get(browser.current_url.split("#")[0] + "#/import")
    browser.refresh()  # a fresh form even when the import page is already open
    field = wait(browser, lambda b: b.find_element(By.ID, "import-file"))
    field.send_keys(str(path))
    if name:
        browser.find_element(By.ID, "import-name").send_keys(name)
    browser.find_element(By.CSS_SELECTOR, "#import-form button[type=submit]").click()


def test_import_shows_the_package_and_every_warning_before_saving(marina, browser):
    source = TRANSLATORS / "compose" / "07-links.yml"
    expected = json.loads(source.with_name(source.name + ".expected.json").read_text())
    choose_import(browser, source)
    wait(browser, lambda b: b.find_element(By.ID, "import-save"))
    pods = browser.find_elements(By.CSS_SELECTOR, "#import-pods tbody tr")
    assert sorted(p.get_attribute("data-pod") for p in pods) == ["cache", "db", "queue", "web"]
    assert "web: 8000 (property web_port) → 8000 (public)" in text_of(
        browser, '#import-pods tr[data-pod="web"]'
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#import-warnings tbody tr")
    shown = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    assert shown == [
        ["07-links.yml", w["pointer"], w["code"], w["reason"]] for w in expected["warnings"]
    ]
    names = [p["name"] for p in marina.ok("GET", "/v1/catalog/packages")["packages"]]
    assert "07-links" not in names  # a preview saves nothing
    assert_accessible(browser, "import preview")
    shot(browser, "import")
    # The preview takes the focus; the next stop is saving it.
    heading = browser.switch_to.active_element
    assert heading.get_attribute("id") == "import-result-heading"
    heading.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "import-save"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda b: "Saved 07-links 1.0.0" in text_of(b, "#import-status"))
    names = [p["name"] for p in marina.ok("GET", "/v1/catalog/packages")["packages"]]
    assert "07-links" in names


def test_import_takes_a_format_and_a_name(marina, browser):
    source = TRANSLATORS / "pmx" / "01-wordpress-mysql.pmx"
    expected = json.loads(source.with_name(source.name + ".expected.json").read_text())
    browser.get(browser.current_url.split("#")[0] + "#/import")
    browser.refresh()
    wait(browser, lambda b: b.find_element(By.ID, "import-file")).send_keys(str(source))
    Select(browser.find_element(By.ID, "import-format")).select_by_value("pmx")
    browser.find_element(By.ID, "import-name").send_keys("blog", Keys.ENTER)
    heading = wait(browser, lambda b: b.find_element(By.ID, "import-result-heading"))
    assert heading.text == "Package blog 1.0.0 (preview, not saved)"
    assert "Read as: Panamax template (.pmx)" in text_of(browser, "#import-result")
    pods = browser.find_elements(By.CSS_SELECTOR, "#import-pods tbody tr")
    assert sorted(p.get_attribute("data-pod") for p in pods) == sorted(expected["pods"])
    rows = browser.find_elements(By.CSS_SELECTOR, "#import-warnings tbody tr")
    assert len(rows) == len(expected["warnings"])


def test_import_of_an_existing_name_offers_to_replace_it(marina, browser):
    choose_import(browser, TRANSLATORS / "compose" / "01-minimal.yml", name="07-links")
    wait(browser, lambda b: b.find_element(By.ID, "import-save")).click()
    replace = wait(browser, lambda b: b.find_element(By.ID, "import-replace"))
    assert "already in the catalog" in text_of(browser, "#import-status")
    before = marina.ok("GET", "/v1/catalog/packages")["packages"]
    assert "07-links.yml" in next(p for p in before if p["name"] == "07-links")["description"]
    replace.click()
    wait(browser, lambda b: "Saved 07-links" in text_of(b, "#import-status"))
    after = marina.ok("GET", "/v1/catalog/packages")["packages"]
    assert "01-minimal.yml" in next(p for p in after if p["name"] == "07-links")["description"]


def test_import_refusal_names_every_problem_and_its_line(marina, browser):
    source = TRANSLATORS / "bad" / "bad-ports.yml"
    expected = json.loads(source.with_name(source.name + ".expected.json").read_text())
    choose_import(browser, source)
    items = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#import-problems li"))
    assert len(items) == len(expected["problems"])
    for item, problem in zip(items, expected["problems"], strict=True):
        assert item.text.startswith(f"line {problem['line']}: {problem['field']} {problem['rule']}")
    assert not browser.find_elements(By.ID, "import-save")
    assert_accessible(browser, "import refused")


def test_another_project_sees_none_of_it(marina, browser):
    env_url = (
        browser.current_url.split("#")[0]
        + "#/environments/"
        + next(e["id"] for e in marina.ok("GET", "/v1/environments")["environments"])
    )
    other = marina.ok("POST", "/v1/tokens", {"project": "elsewhere"})["token"]
    browser.find_element(By.ID, "logout").click()
    token = wait(browser, ec.presence_of_element_located((By.ID, "token")))
    token.send_keys(other, Keys.ENTER)
    wait(browser, lambda b: "No environments yet." in b.find_element(By.TAG_NAME, "main").text)
    browser.get(env_url)
    wait(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == "Environment not found")
    assert not browser.find_elements(By.ID, "tree")
    browser.get(env_url.split("#")[0] + "#/import")
    refused = wait(browser, lambda b: b.find_element(By.ID, "import-refused"))
    assert "admin token" in refused.text
    assert not browser.find_elements(By.ID, "import-file")
    assert browser.find_elements(By.ID, "logout")[0].is_displayed()  # still logged in
    assert_accessible(browser, "import without an admin token")
