"""The web console (issue 25 part 3) in a real browser: Debian's chromium driven by Selenium
through /usr/bin/chromedriver, against `rxgate serve` over the session's lakehouse with the
demo policy (catalog/policies.toml) and a known pseudonym key.

Covers: the login as admin and as analyst (the session cookie is Secure, HttpOnly and
SameSite=Strict, and Chromium keeps it over http://127.0.0.1), every page with real content,
the analyst's top-prescriber chart showing pseudonyms where the admin's shows NPIs, killing a
running statement with the button (the client gets 57014), the refusals (401 without a
cookie, 401 for a wrong password with the failed login in the audit trail, 403 without the
CSRF token), the security headers, and the chart helpers' unit tests (node --test).
Screenshots of each page go to docs/console/<page>.png (linked from the README)."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import TEST_PASSWORD, TEST_USER, free_port, start_server_with_roles, stop_server
from rxcli import REPO_ROOT

KEY = "console-test-pseudonym-key-42"
PASSWORD = "console-test-pw"
ANALYST = "ann"
SHOTS = REPO_ROOT / "docs" / "console"
NPI = re.compile(r"^\d{10}$")


def pseudonym(npi: str) -> str:
    return "k1:" + hmac.new(KEY.encode(), npi.encode(), hashlib.sha256).hexdigest()[:32]


@pytest.fixture(scope="module")
def cserver(rxgate_bin, lakehouse, tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    policy = d / "policies.toml"
    shutil.copy(REPO_ROOT / "catalog" / "policies.toml", policy)
    config = d / "rxgate.toml"
    config.write_text(f'[policy]\nfile = "{policy}"\n[audit]\ndir = "{d / "audit"}"\n')
    http_port = free_port()
    s = start_server_with_roles(rxgate_bin, lakehouse.rx.data_dir, d, config, {ANALYST: "analyst"}, PASSWORD,
                                env={"RXGATE_PSEUDONYM_KEY": KEY, "RXGATE_HTTP_LISTEN": f"127.0.0.1:{http_port}"})
    s.base = f"http://127.0.0.1:{http_port}"
    s.audit_file = d / "audit" / "audit.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", http_port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def audit(server) -> list[dict]:
    time.sleep(0.3)
    return [json.loads(line) for line in server.audit_file.read_text().splitlines() if line.strip()]


def login(driver, server, user: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(server.base + "/console/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.loaded") == "overview")


def open_page(driver, page: str, timeout: float = 60) -> None:
    driver.execute_script("window.location.hash = arguments[0]", "#" + page)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.body.dataset.loaded") == page)


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.body.scrollHeight, 2400)")
    driver.set_window_size(1400, max(800, height + 40))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def texts(driver, css: str) -> list[str]:
    return [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, css)]


def session_for(server, user: str, password: str) -> requests.Session:
    http = requests.Session()
    r = http.post(server.base + "/console/login", json={"user": user, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    # requests keeps Secure cookies for http://127.0.0.1 only when told; send it by hand.
    cookie = r.headers["set-cookie"].split(";")[0]
    http.headers["Cookie"] = cookie
    http.headers["X-CSRF-Token"] = r.json()["csrf"]
    return http


# --------------------------------------------------------------------------- without a browser

def test_chart_helpers_unit_tests_pass_in_node():
    r = subprocess.run(["node", "--test", str(REPO_ROOT / "tests" / "console")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^# pass [1-9]", r.stdout, re.M) and re.search(r"^# fail 0", r.stdout, re.M), r.stdout


def test_requests_without_a_session_are_refused(cserver):
    for path in ("api/me", "api/overview", "api/queries", "api/history", "api/catalog",
                 "api/table?schema=health&table=us_cities", "api/reports/city", "api/reports/top"):
        r = requests.get(f"{cserver.base}/console/{path}", timeout=30)
        assert r.status_code == 401, (path, r.status_code, r.text)
    r = requests.post(f"{cserver.base}/console/api/kill", json={"id": "x"}, timeout=30)
    assert r.status_code == 401
    r = requests.get(f"{cserver.base}/console/api/catalog", headers={"Cookie": "rxgate_console=" + "0" * 64},
                     timeout=30)
    assert r.status_code == 401
    # The HTML shell sends the browser to the login page instead.
    r = requests.get(f"{cserver.base}/console/", allow_redirects=False, timeout=30)
    assert r.status_code in (303, 307) and r.headers["location"] == "/console/login"


def test_wrong_password_is_401_and_audited(cserver):
    r = requests.post(f"{cserver.base}/console/login", json={"user": ANALYST, "password": "wrong-pw"}, timeout=30)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert r.json()["error"]["message"] == f'password authentication failed for user "{ANALYST}"'
    r = requests.post(f"{cserver.base}/console/login", data={"user": "nobody", "password": "x"}, timeout=30)
    assert r.status_code == 401
    logins = [x for x in audit(cserver) if x["kind"] == "login" and x["protocol"] == "http"]
    assert any(x["user"] == ANALYST and x["outcome"] == "error" and x["error_code"] == "AuthFailed"
               and "login (http): failed" in x["statement"] for x in logins), logins
    assert any(x["user"] == "nobody" and x["outcome"] == "error" for x in logins)


def test_cookie_headers_and_csrf(cserver):
    r = requests.post(f"{cserver.base}/console/login", json={"user": ANALYST, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert re.match(r"rxgate_console=[0-9a-f]{64};", cookie), cookie
    for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/console"):
        assert attr in cookie, cookie
    for page in ("/console/login", "/console/assets/console.js"):
        h = requests.get(cserver.base + page, timeout=30).headers
        assert h["content-security-policy"].startswith("default-src 'self'"), h
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
    assert requests.get(cserver.base + "/console/assets/nope.js", timeout=30).status_code == 404
    http = session_for(cserver, ANALYST, PASSWORD)
    assert http.get(cserver.base + "/console/api/me", timeout=30).json()["user"] == ANALYST
    # A change without the session's CSRF token is refused.
    r = http.post(cserver.base + "/console/api/kill", json={"id": "1"}, headers={"X-CSRF-Token": "bad"}, timeout=30)
    assert r.status_code == 403
    # Filters are parameters: a quote in a filter is just text.
    r = http.get(cserver.base + "/console/api/history", params={"user": "x' OR '1'='1"}, timeout=30).json()
    assert "error" not in r["history"] or r["history"]["error"]["sqlstate"] != "42601", r
    # Logout ends the session.
    assert http.post(cserver.base + "/console/logout", timeout=30).status_code == 200
    assert http.get(cserver.base + "/console/api/me", timeout=30).status_code == 401
    ok = [x for x in audit(cserver) if x["kind"] == "login" and x["user"] == ANALYST and x["outcome"] == "ok"
          and x["protocol"] == "http"]
    assert ok


# --------------------------------------------------------------------------- in the browser

def test_login_page_screenshot(cserver, browser):
    browser.delete_all_cookies()
    browser.get(cserver.base + "/console/")
    WebDriverWait(browser, 30).until(lambda d: d.current_url.endswith("/console/login"))
    browser.find_element(By.ID, "user").send_keys(ANALYST)
    browser.find_element(By.ID, "password").send_keys("wrong")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
    assert "password authentication failed" in browser.find_element(By.ID, "error").text
    shot(browser, "login")


def test_admin_pages(cserver, browser):
    login(browser, cserver, TEST_USER, TEST_PASSWORD)
    cookie = browser.get_cookie("rxgate_console")
    assert cookie and cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert browser.find_element(By.ID, "who").text.startswith(TEST_USER)

    # Catalog: schemas, tables, columns, partitions and snapshots.
    open_page(browser, "catalog")
    tables = [b.get_attribute("data-table") for b in browser.find_elements(By.CSS_SELECTOR, "button.table-link")]
    assert {"health.prescriber_drug", "health.top_prescribers", "health.city_report"} <= set(tables), tables
    browser.find_element(By.CSS_SELECTOR, "button[data-table='health.prescriber_drug']").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#c-snapshots table, #c-snapshots p"))
    columns = texts(browser, "#c-columns td:first-child")
    assert "npi" in columns and "delivery_date" in columns, columns
    partitions = texts(browser, "#c-partitions td:first-child")
    assert partitions and all("delivery_date" in p for p in partitions), partitions
    assert any('"presc_state"' in p for p in partitions)
    assert browser.find_elements(By.CSS_SELECTOR, "#c-snapshots tbody tr")
    shot(browser, "catalog")

    # Reports: the admin's top prescribers are NPIs.
    open_page(browser, "reports")
    labels = texts(browser, "#r-top svg text.bar-label")
    assert labels and all(NPI.match(x) for x in labels), labels
    assert texts(browser, "#r-city-states svg text.bar-label")
    assert browser.find_elements(By.CSS_SELECTOR, "#r-city-cities svg rect.bar")
    cserver.admin_top = (browser.find_element(By.ID, "r-state").get_attribute("value"), labels)
    shot(browser, "reports-admin")


def test_analyst_pages_show_what_the_policy_allows(cserver, browser):
    login(browser, cserver, ANALYST, PASSWORD)
    # Overview: server metrics are for admins; the analyst's own session counts.
    note = browser.find_element(By.ID, "ov-note")
    assert note.is_displayed() and "admins only" in note.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#ov-charts svg")
    assert int(browser.find_element(By.ID, "ov-my-sessions").text) >= 1
    shot(browser, "overview-analyst")

    # Reports: pseudonyms, never NPIs; the same prescribers as the admin's chart.
    open_page(browser, "reports")
    state, admin_labels = cserver.admin_top
    assert browser.find_element(By.ID, "r-state").get_attribute("value") == state
    labels = texts(browser, "#r-top svg text.bar-label")
    assert labels and all(re.fullmatch(r"k1:[0-9a-f]{32}", x) for x in labels), labels
    assert not any(NPI.match(x) for x in labels)
    assert sorted(labels) == sorted(pseudonym(n) for n in admin_labels)
    page = browser.find_element(By.ID, "page-reports").text
    assert not any(n in page for n in admin_labels)
    # Names are redacted in the table under the chart.
    names = texts(browser, "#r-top-table td:nth-child(2)")
    assert names and all(not re.search(r"[a-z]", n) for n in names), names
    shot(browser, "reports")

    # Catalog: the tables the analyst may query; no metadata tables of masked tables.
    open_page(browser, "catalog")
    tables = [b.get_attribute("data-table") for b in browser.find_elements(By.CSS_SELECTOR, "button.table-link")]
    assert "health.prescriber_drug" in tables and not any(t.startswith("sandbox.") for t in tables), tables
    browser.find_element(By.CSS_SELECTOR, "button[data-table='health.prescriber_drug']").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#c-snapshots p, #c-snapshots table"))
    assert "not visible to you" in browser.find_element(By.ID, "c-partitions").text

    # The console's statements are in the audit trail, under the analyst's masks.
    recs = [x for x in audit(cserver) if x["kind"] == "statement" and x["user"] == ANALYST
            and x["protocol"] == "http" and "health.top_prescribers" in x["statement"]]
    assert recs and any("npi: pseudonym" in m for r in recs for m in (r.get("masks") or [])), recs[-1:]


def test_kill_a_running_query_with_the_button(cserver, browser):
    marker = "console-kill-7319"
    # Hours of work unless killed; it streams, so the server keeps answering meanwhile (a
    # CPU-bound cross join starved every other statement of the 2-core test machine).
    sql = ("SELECT k, count(*) FROM (SELECT x % 100000 AS k FROM generate_series(1, 100000000000) AS t(x)) s "
           f"GROUP BY k ORDER BY 2 DESC LIMIT 1 -- {marker}")
    outcome: dict = {}

    def long_query():
        try:
            with psycopg.connect(cserver.dsn(user=ANALYST, password=PASSWORD), autocommit=True) as conn:
                started = time.monotonic()
                try:
                    outcome["rows"] = conn.execute(sql).fetchall()
                except psycopg.Error as e:
                    outcome["sqlstate"] = e.sqlstate
                outcome["secs"] = time.monotonic() - started
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = repr(e)

    login(browser, cserver, ANALYST, PASSWORD)
    open_page(browser, "queries")
    worker = threading.Thread(target=long_query, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    row = None
    while row is None:
        assert time.monotonic() < deadline and worker.is_alive(), (outcome, browser.find_element(By.ID, "q-table").text)
        for tr in browser.find_elements(By.CSS_SELECTOR, "#q-table tbody tr"):
            if marker in tr.text and tr.find_elements(By.CSS_SELECTOR, "button.kill"):
                row = tr
                break
        else:
            time.sleep(1)
            browser.find_element(By.ID, "q-refresh").click()
            time.sleep(1)
    shot(browser, "queries")
    row.find_element(By.CSS_SELECTOR, "button.kill").click()
    worker.join(60)
    assert not worker.is_alive(), "the statement was not cancelled"
    assert outcome.get("sqlstate") == "57014" and outcome["secs"] < 100, outcome
    WebDriverWait(browser, 30).until(lambda d: "Killed" in d.find_element(By.ID, "status").text)

    # History: the killed statement, found with the filters.
    open_page(browser, "history")
    browser.find_element(By.ID, "h-user").send_keys(ANALYST)
    browser.find_element(By.ID, "h-text").send_keys(marker)
    browser.find_element(By.ID, "h-minutes").send_keys("1 hour")
    browser.find_element(By.ID, "h-apply").click()
    WebDriverWait(browser, 30).until(lambda d: marker in d.find_element(By.ID, "h-table").text)
    body = browser.find_element(By.ID, "h-table").text
    assert "57014" in body or "cancel" in body.lower(), body
    shot(browser, "history")


def test_admin_overview_charts(cserver, browser):
    login(browser, cserver, TEST_USER, TEST_PASSWORD)
    # The charts of system.metrics_history (sampled every 10 s): last in this module, so the
    # server has run a while; wait for three samples.
    deadline = time.monotonic() + 60

    def samples() -> int:
        paths = browser.find_elements(By.CSS_SELECTOR, "#ov-sessions path.series")
        return len(paths[0].get_attribute("d").split(" L")) if paths else 0

    while samples() < 3:
        assert time.monotonic() < deadline, browser.find_element(By.ID, "page-overview").text
        time.sleep(3)
        open_page(browser, "queries")
        open_page(browser, "overview")
    titles = texts(browser, "#ov-charts h2")
    for name in ("Sessions", "Statements per second", "Memory pool used", "Data cache"):
        assert any(t.startswith(name) for t in titles), titles
    assert int(browser.find_element(By.ID, "ov-my-sessions").text) >= 1
    shot(browser, "overview")
