"""The README's screenshots (docs/*.png), taken from a clean demo: `make screenshots`.

It runs what `make demo` runs (a cluster named demo and the guestbook, in an
environment named demo) in a temporary state directory, drives headless
Chromium through the dashboard and stops everything it started.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.marina import Marina
from tests.e2e.test_dashboard import object_row, start_chromium, wait

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
IMPORTED = ROOT / "tests" / "data" / "translators" / "compose" / "26-wordpress.yml"


def take(browser, name: str, *, at: str = "") -> None:
    """Save the page from the top, or from the element `at` selects."""
    browser.execute_script(
        "const at = arguments[0] && document.querySelector(arguments[0]);"
        "if (at) at.scrollIntoView(); else window.scrollTo(0, 0);"
        "document.activeElement.blur()",
        at,
    )
    path = DOCS / f"{name}.png"
    browser.save_screenshot(str(path))
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="marina-screenshots-") as scratch:
        here = Path(scratch)
        marina = Marina(here / "state").start()
        browser = start_chromium(here / "chrome", here / "downloads")
        try:
            env, _ = marina.deploy_guestbook("demo", {"name": "demo", "nodeCount": 2})
            marina.run(env, "web:scalePodUp")

            browser.get(marina.api + "/")
            wait(browser, lambda b: b.find_element(By.ID, "token")).send_keys(
                marina.token, Keys.ENTER
            )
            wait(browser, lambda b: b.find_element(By.ID, "environments"))

            browser.get(f"{marina.api}/#/environments/{env}")
            wait(browser, lambda b: "replicas 2/2 ready" in object_row(b, "web").text)
            # The latest task, opened from the recent tasks, shows its log and result.
            wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#tasks tbody button")).click()
            wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#task-result p"))
            take(browser, "environment")

            # Each pod's replicas: node, readiness, restarts, last reason, log.
            take(browser, "replicas", at='li[data-object="store"]')

            browser.get(f"{marina.api}/#/catalog")
            card = wait(
                browser, lambda b: b.find_element(By.CSS_SELECTOR, 'article[data-name="guestbook"]')
            )
            card.find_element(By.CSS_SELECTOR, "button[data-package]").click()
            take(browser, "catalog")

            browser.get(f"{marina.api}/#/import")
            wait(browser, lambda b: b.find_element(By.ID, "import-file")).send_keys(str(IMPORTED))
            browser.find_element(By.CSS_SELECTOR, "#import-form button[type=submit]").click()
            wait(browser, lambda b: b.find_element(By.ID, "import-save"))
            take(browser, "import")
        finally:
            browser.quit()
            marina.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
