"""The dashboard's view of pods in real headless Chromium against a real
`marina up`: each replica's readiness, restarts and last reason, and a live
log per replica, by keyboard; removing a pod after a confirmation; forms that
speak the package's own words. Every view is checked with axe-core."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.marina import Marina
from tests.e2e.test_dashboard import assert_accessible, object_row, start_chromium, text_of, wait

pytestmark = pytest.mark.slow

TICKER = "echo started $HOSTNAME; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"
CRASHER = "echo about to fail; exit 3"


def pod(name: str, command: str, replicas: int) -> dict[str, object]:
    return {
        "name": name,
        "replicas": replicas,
        "containers": [
            {"name": name, "image": "busybox", "command": ["sh", "-c", command], "cores": 0.1}
        ],
    }


@pytest.fixture(scope="module")
def environment(marina: Marina) -> str:
    """A cluster running a pod that writes a line a tick, and one whose replica
    keeps exiting with code 3."""
    env = str(marina.ok("POST", "/v1/environments", {"name": "pods"})["id"])
    services = f"/v1/environments/{env}/services"
    marina.ok("POST", services, {"package": "kubernetes-cluster", "properties": {"name": "pc"}})
    marina.ok(
        "POST", services, {"package": "kubernetes-pod", "properties": pod("ticker", TICKER, 0)}
    )
    marina.ok(
        "POST", services, {"package": "kubernetes-pod", "properties": pod("crasher", CRASHER, 0)}
    )
    for action in ("pc:deploy", "ticker:scalePodUp"):
        task = marina.run(env, action)
        assert task["state"] == "succeeded", task
    # It never gets ready: the task fails, and the replica is restarted again and again.
    marina.run(env, "crasher:scalePodUp")
    return env


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    browser = start_chromium(
        tmp_path_factory.mktemp("chrome-pods"), tmp_path_factory.mktemp("downloads")
    )
    yield browser
    browser.quit()


def open_environment(marina: Marina, browser: webdriver.Chrome, env: str) -> None:
    browser.get(marina.api + "/")
    field = wait(browser, lambda b: b.find_element(By.ID, "token"))
    field.send_keys(marina.token, Keys.ENTER)
    wait(browser, lambda b: b.find_element(By.ID, "new-env"))
    browser.get(f"{marina.api}/#/environments/{env}")
    wait(browser, lambda b: object_row(b, "ticker"))


def replica_row(browser: webdriver.Chrome, pod_name: str, index: int = 0):
    return object_row(browser, pod_name).find_element(
        By.CSS_SELECTOR, f'table.replica-table tr[data-replica="{index}"]'
    )


def ticks(browser: webdriver.Chrome) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", text_of(browser, "#pod-log"))]


def test_each_replica_shows_ready_restarts_and_last_reason(marina, environment, browser):
    open_environment(marina, browser, environment)
    wait(
        browser,
        lambda b: replica_row(b, "ticker").find_element(By.CSS_SELECTOR, ".state").text == "ready",
    )
    assert "replicas 1/1 ready" in object_row(browser, "ticker").text
    # Between its restarts (read in one go, as the live view re-renders the row).
    cells = wait(
        browser,
        lambda b: (lambda row: row if "exited with code 3" in row[4] else None)(
            [c.text for c in replica_row(b, "crasher").find_elements(By.CSS_SELECTOR, "th, td")]
        ),
        120,
    )
    assert cells[2] == "not ready"
    assert int(cells[3]) >= 1
    headers = object_row(browser, "ticker").find_elements(By.CSS_SELECTOR, "table thead th")
    assert [h.text for h in headers] == [
        "Replica",
        "Node",
        "Ready",
        "Restarts",
        "Last reason",
        "Log",
    ]
    assert_accessible(browser, "environment with replicas")


def test_a_replica_log_follows_live_by_keyboard(marina, environment, browser):
    def press() -> bool:
        # Found afresh each time: live updates redraw the replica table.
        button = replica_row(browser, "ticker").find_element(By.CSS_SELECTOR, "button[data-logs]")
        assert button.get_attribute("aria-label") == "Show the log of ticker replica 0"
        if not (button.is_displayed() and button.is_enabled()):
            return False
        button.send_keys(Keys.ENTER)
        return True

    wait(browser, lambda b: press())
    wait(browser, lambda b: b.find_element(By.ID, "log-heading").text == "Log of ticker, replica 0")
    assert browser.switch_to.active_element.get_attribute("id") == "log-heading"
    wait(browser, lambda b: "started" in text_of(b, "#pod-log") and ticks(b))
    first = max(ticks(browser))
    # Lines written after the log was opened arrive without a reload.
    wait(browser, lambda b: max(ticks(b)) >= first + 3)
    assert "Following" in text_of(browser, "#log-status")
    log = browser.find_element(By.ID, "pod-log")
    assert log.get_attribute("role") == "log"
    assert_accessible(browser, "environment with a replica's log")

    browser.find_element(By.ID, "log-close").send_keys(Keys.ENTER)
    wait(browser, lambda b: not b.find_element(By.ID, "log-panel").is_displayed())
    assert browser.switch_to.active_element.get_attribute("data-logs") == "0"


def test_a_crashing_replica_log_shows_what_it_wrote(marina, environment, browser):
    replica_row(browser, "crasher").find_element(By.CSS_SELECTOR, "button[data-logs]").click()
    wait(browser, lambda b: "about to fail" in text_of(b, "#pod-log"))
    assert "crasher" in text_of(browser, "#log-heading")


WORDED = {
    "format": "marina/1",
    "name": "worded",
    "version": "1.0.0",
    "description": "Properties whose patterns the package puts in its own words.",
    "class": "KubernetesPod",
    "properties": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z]+$", "x-error": "must be a pet's name"},
            "zone": {"type": "string", "pattern": "^z[0-9]$", "errorMessage": "must be z0 to z9"},
            "tag": {"type": "string", "pattern": "^(ab|cd)+$"},
        },
    },
    "ui": {"order": ["tag", "zone", "name"]},
}


def test_pattern_errors_use_the_package_words_in_its_order(marina, environment, browser):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.yaml", yaml.safe_dump(WORDED))
    status, reply = marina.call(
        "POST", "/v1/catalog/packages?filename=worded.zip", raw=buffer.getvalue()
    )
    assert status < 300, reply
    browser.get(f"{marina.api}/#/catalog")
    card = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, 'article[data-name="worded"]'))
    card.find_element(By.CSS_SELECTOR, "button[data-package]").click()
    fields = wait(browser, lambda b: card.find_elements(By.CSS_SELECTOR, "input[id^=prop-]"))
    assert [f.get_attribute("id") for f in fields] == [
        "prop-worded-tag",
        "prop-worded-zone",
        "prop-worded-name",
    ]
    for field, value in zip(fields, ("xy", "a1", "Rex!"), strict=True):
        field.send_keys(value)
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda b: text_of(b, "#prop-worded-name-error"))
    assert text_of(browser, "#prop-worded-name-error") == "must be a pet's name"
    assert text_of(browser, "#prop-worded-zone-error") == "must be z0 to z9"
    assert text_of(browser, "#prop-worded-tag-error") == "must match the expected format"
    assert "^" not in text_of(browser, "main")
    assert_accessible(browser, "catalog form with the package's own words")


def test_removing_a_pod_asks_first_naming_what_is_lost(marina, environment, browser):
    browser.get(f"{marina.api}/#/environments/{environment}")
    remove = 'li[data-object="crasher"] button[data-remove]'
    label = wait(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, remove).get_attribute("aria-label")
    )
    assert label == "Remove crasher"
    tasks_before = marina.ok("GET", f"/v1/environments/{environment}/tasks")["tasks"]
    # The live view re-renders the row as the replica restarts: press what is there.
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, remove).send_keys(Keys.ENTER) or True)
    dialog = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open]"))
    assert "Pod crasher will be removed: its 1 replica stops" in dialog.text
    assert_accessible(browser, "removal confirmation")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)  # Cancel has the focus
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog[open]"))
    assert marina.ok("GET", f"/v1/environments/{environment}/tasks")["tasks"] == tasks_before

    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, remove).send_keys(Keys.ENTER) or True)
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open]"))
    browser.find_element(By.ID, "confirm-ok").click()
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#task-result p"), 120)
    assert "Remove — crasher" in text_of(browser, "#task-heading")
    assert "failed" not in text_of(browser, "#task-state")
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, 'li[data-object="crasher"]'))
    assert "crasher" not in marina.objects(environment)
    assert "ticker" in marina.objects(environment)
