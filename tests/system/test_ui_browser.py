"""The UI plugin in a real browser: Debian's headless Chromium against a real ``airflow api-server``.

Setup, all in a temporary AIRFLOW_HOME: a sqlite DB, SimpleAuthManager with a real
login (user ``admin``, password from a passwords file), the ``openai_default``
connection pointing at an emulator, and one DAG run made with ``airflow dags test``:
a submit task whose 5 requests end 3 completed and 2 failed. Then the api-server
starts (the plugin comes in through its ``airflow.plugins`` entry point) and Chromium,
driven over the DevTools protocol, signs in with the JWT cookie the UI itself uses,
opens the task's "OpenAI Batches" tab and the "Batches" page, saves screenshots and
the DOM under ``tests/output/`` and checks the progress bar's counts.

Needs ``/usr/bin/chromium`` (``scripts/install_chromium.sh``): the browser tests skip without it,
and fail in CI (``CI=true``), where a skip would pass a UI nobody looked at. The tests that
need no browser (the API checks) run either way.
Run: ``.venv/bin/python -m pytest -q tests/system/test_ui_browser.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from airflow_batch_provider.emulator.testing import EmulatorHandle, running_emulator

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[1] / "output"
BIN = Path(sys.executable).parent
PASSWORD = "browser-test-password"
DAG_ID = "ui_browser_demo"
INVALID_DAG_ID = "ui_browser_invalid"
API_KEY = "sk-browser-test-Secret-0123456789"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

pytestmark = [pytest.mark.timeout(600)]


def in_ci(environ: Any = os.environ) -> bool:
    """``CI=true`` (GitHub Actions, GitLab and most others set it)."""
    return str(environ.get("CI", "")).strip().lower() in ("true", "1", "yes")


def require(missing: str | None, *, ci: bool) -> None:
    """Skip a browser test for a missing browser, or fail when in CI: there a skip would lie."""
    if missing is None:
        return
    if ci:
        pytest.fail(f"CI=true and {missing}: the browser tests cannot run, so CI fails instead of skipping.")
    pytest.skip(missing)


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return "needs Debian's chromium at /usr/bin/chromium: run scripts/install_chromium.sh"
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return "the DevTools client needs the websockets package (pip install websockets)"
    return None


DAG_FILE = """
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
        submit = OpenAIBatchSubmitOperator(
            task_id="submit",
            input_path={path!r},
            deferrable=False,
            poll_interval=0.1,
            max_poll_interval=0.5,
            timeout=60,
        )
        OpenAIBatchFetchOperator(task_id="fetch", batches=submit.output, destination={dest!r})
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _requests(n: int, failing: int) -> str:
    lines = []
    for i in range(n):
        text = f"question {i}" + (" [[emulator:context_length_exceeded]]" if i < failing else "")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        lines.append(
            json.dumps({"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    return "\n".join(lines) + "\n"


def _airflow(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _stop(process: subprocess.Popen[Any]) -> None:
    """Stop a process this test started, and its children (it leads its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(profile="instant", api_key=API_KEY) as handle:
        yield handle


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorHandle) -> dict[str, Any]:
    """An AIRFLOW_HOME with a migrated DB, a login, the connection and one finished DAG run."""
    import airflow

    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    port = _free_port()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-jwt-secret-" + "x" * 64,
        "AIRFLOW__API__SECRET_KEY": "browser-test-secret-key",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai", "host": emulator.base_url, "password": emulator.api_key}
        ),
    }
    # A migrated DB: the integration tests' cached template when there is one (fast), else migrate.
    template = Path(f"/tmp/airflow-batch-provider-test-{airflow.__version__}.db")
    if template.exists():
        shutil.copyfile(template, home / "airflow.db")
    _airflow(env, "db", "migrate", timeout=600)

    data = home / "requests.jsonl"
    data.write_text(_requests(5, failing=2))
    (home / "dags" / f"{DAG_ID}.py").write_text(
        textwrap.dedent(DAG_FILE.format(dag_id=DAG_ID, path=str(data), dest=f"file://{home / 'landed'}/"))
    )
    # A second DAG whose input is invalid: its submit fails before anything is uploaded.
    invalid = home / "invalid.jsonl"
    lines = _requests(3, failing=0).splitlines(keepends=True)
    lines[1] = '{"custom_id": "q-1", "method": "POST", "url": "/v1/chat/completions", "body": {\n'
    invalid.write_text("".join(lines))
    (home / "dags" / f"{INVALID_DAG_ID}.py").write_text(
        textwrap.dedent(
            DAG_FILE.format(
                dag_id=INVALID_DAG_ID, path=str(invalid), dest=f"file://{home / 'landed-invalid'}/"
            )
        )
    )
    _airflow(env, "dags", "reserialize")
    _airflow(env, "dags", "test", DAG_ID, "2026-01-02T03:04:05+00:00")
    failed = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", INVALID_DAG_ID, "2026-01-02T03:04:05+00:00"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    with sqlite3.connect(home / "airflow.db") as db:
        runs = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchall()
        bad = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (INVALID_DAG_ID,)).fetchall()
    assert len(runs) == 1 and runs[0][1] == "success", runs  # submit and fetch both succeeded
    assert len(bad) == 1 and bad[0][1] == "failed", (bad, failed.stdout[-2000:], failed.stderr[-2000:])
    return {"home": home, "env": env, "port": port, "run_id": runs[0][0], "invalid_run_id": bad[0][0]}


@pytest.fixture(scope="module")
def api_server(airflow_home: dict[str, Any]) -> Iterator[str]:
    """A real ``airflow api-server``; yields its base URL."""
    port = airflow_home["port"]
    log = (airflow_home["home"] / "api-server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=airflow_home["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the api-server exited; see {airflow_home['home'] / 'api-server.log'}")
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the api-server did not answer within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="module")
def token(api_server: str) -> str:
    """A JWT from Airflow's own login endpoint."""
    response = httpx.post(
        f"{api_server}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["access_token"])


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        self.process = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                _stop(self.process)
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(p for p in pages if p.get("type") == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        )
        self._id = 0
        self.call("Page.enable")
        self.call("Network.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False
        )

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 60) -> None:
        """Navigate to ``url`` and wait until the JS expression ``ready`` is truthy."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(
            f"(() => {{ try {{ return !!({ready}); }} catch (e) {{ return false; }} }})()"
        ):
            if time.monotonic() > deadline:
                shot = self.screenshot("not-ready.png")
                text = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"{url}: not ready ({ready}) after {timeout} s (screenshot {shot}); "
                    f"page text:\n{text[:3000]}"
                )
            time.sleep(0.25)
        time.sleep(0.5)  # let fonts and the frame's layout settle before the screenshot

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = OUTPUT / name
        path.write_bytes(base64.b64decode(data))
        return path

    def dump_dom(self, name: str, expression: str = "document.documentElement.outerHTML") -> str:
        html = str(self.evaluate(expression))
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / name).write_text(html)
        return html

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            _stop(self.process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, api_server: str, token: str) -> Iterator[Chromium]:
    require(browser_missing(), ci=in_ci())
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        # Signed in the way the UI is: Airflow's JWT in the ``_token`` cookie.
        chromium.call("Network.setCookie", name="_token", value=token, url=api_server, httpOnly=True)
        yield chromium
    finally:
        chromium.close()


FRAME = "document.querySelector('iframe')"
FRAME_DOC = f"{FRAME}.contentDocument"


def _bar(chromium: Chromium, doc: str = "document", selector: str = ".progress") -> dict[str, str]:
    return dict(chromium.evaluate(f"Object.assign({{}}, {doc}.querySelector('{selector}').dataset)"))


def test_a_missing_browser_skips_locally_and_fails_in_ci():
    require(None, ci=True)  # a browser: nothing to say
    with pytest.raises(pytest.fail.Exception, match="CI=true and no chromium"):
        require("no chromium", ci=True)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        require("no chromium", ci=False)
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"}) and not in_ci({}) and not in_ci({"CI": "false"})


def test_api_refuses_without_a_login_and_lists_the_plugin(api_server, airflow_home, token):
    params = {"dag_id": DAG_ID, "run_id": airflow_home["run_id"], "task_id": "submit"}
    assert httpx.get(f"{api_server}/openai-batch/api/ti", params=params, timeout=30).status_code == 401
    assert httpx.get(f"{api_server}/openai-batch/batches", timeout=30).status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    view = httpx.get(f"{api_server}/openai-batch/api/ti", params=params, headers=bearer, timeout=30).json()
    assert view["batches"][0]["progress"]["completed"] == 3 and view["batches"][0]["source"] == "live"

    plugins = httpx.get(f"{api_server}/api/v2/plugins", headers=bearer, timeout=30).json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "openai_batch_monitor"]
    assert {v["url_route"] for v in ours["external_views"]} == {"openai-batch", "openai-batches"}


def test_task_tab_in_the_airflow_ui_shows_the_progress(browser, api_server, airflow_home):
    run_id = airflow_home["run_id"]
    # The task-instance page of the Airflow UI, on the plugin's tab (an iframe of our page).
    browser.open(
        f"{api_server}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/submit/plugin/openai-batch",
        ready=f"{FRAME_DOC}.querySelector('.progress')",
    )
    shot = browser.screenshot("ui_task_tab.png")
    html = browser.dump_dom("ui_task_tab.frame.html", f"{FRAME_DOC}.documentElement.outerHTML")

    assert _bar(browser, FRAME_DOC) == {"completed": "3", "failed": "2", "total": "5"}
    label = browser.evaluate(f"{FRAME_DOC}.querySelector('.progress-label').innerText")
    assert "3 completed" in label and "2 failed" in label and "5 total" in label
    widths = browser.evaluate(
        f"Array.from({FRAME_DOC}.querySelectorAll('.progress .seg'))"
        ".map(s => s.getBoundingClientRect().width)"
    )
    assert widths[0] > 0 and widths[1] > 0 and widths[0] / widths[1] == pytest.approx(1.5, rel=0.05)
    assert browser.evaluate(f"{FRAME_DOC}.querySelector('.card .badge').innerText").lower() == "completed"
    assert API_KEY not in html and shot.stat().st_size > 10_000


def test_task_tab_page_alone(browser, api_server, airflow_home):
    run_id = airflow_home["run_id"]
    query = urlencode({"dag_id": DAG_ID, "run_id": run_id, "task_id": "submit", "map_index": -1})
    browser.open(f"{api_server}/openai-batch/ti?{query}", ready="document.querySelector('.progress')")
    browser.screenshot("ui_task_tab_page.png")
    browser.dump_dom("ui_task_tab_page.html")
    assert _bar(browser) == {"completed": "3", "failed": "2", "total": "5"}
    text = browser.evaluate("document.body.innerText")
    assert "gpt-4o-mini" in text and "Estimated cost" in text and "Tokens" in text


def test_batches_page_in_the_airflow_ui(browser, api_server, emulator):
    # One more batch on the service, made outside Airflow: the page lists both, newest first.
    client = emulator.client()
    uploaded = client.files.create(file=("more.jsonl", _requests(4, failing=1).encode()), purpose="batch")
    extra = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 10
    while client.batches.retrieve(extra.id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)

    browser.open(
        f"{api_server}/plugin/openai-batches", ready=f"{FRAME_DOC}.querySelectorAll('tbody tr').length >= 2"
    )
    browser.screenshot("ui_batches_page.png")
    browser.dump_dom("ui_batches_page.frame.html", f"{FRAME_DOC}.documentElement.outerHTML")

    rows = browser.evaluate(
        f"Array.from({FRAME_DOC}.querySelectorAll('tbody tr')).map(r => "
        "Object.assign({id: r.dataset.batchId, status: r.dataset.status},"
        " r.querySelector('.progress').dataset))"
    )
    assert rows[0] == {"id": extra.id, "status": "completed", "completed": "3", "failed": "1", "total": "4"}
    assert rows[1]["completed"] == "3" and rows[1]["failed"] == "2" and rows[1]["total"] == "5"
    # The Airflow task of a batch the operator made links to its task tab.
    link = browser.evaluate(
        f"{FRAME_DOC}.querySelector('tbody tr:nth-child(2) a[target=_top]').getAttribute('href')"
    )
    assert link.startswith(f"/dags/{DAG_ID}/runs/") and link.endswith("/tasks/submit/plugin/openai-batch")
    assert browser.evaluate(f"{FRAME_DOC}.getElementById('auto-refresh').checked") is True

    # Following it opens the Airflow UI's task page on the plugin's tab.
    browser.open(f"{api_server}{link}", ready=f"{FRAME_DOC}.querySelector('.progress')")
    assert _bar(browser, FRAME_DOC) == {"completed": "3", "failed": "2", "total": "5"}


def test_task_tab_of_a_submit_that_failed_validation_shows_why(browser, api_server, airflow_home):
    run_id = airflow_home["invalid_run_id"]
    browser.open(
        f"{api_server}/dags/{INVALID_DAG_ID}/runs/{quote(run_id, safe='')}/tasks/submit/plugin/openai-batch",
        ready=f"{FRAME_DOC}.querySelector('.failure')",
    )
    browser.screenshot("ui_task_tab_failed_validation.png")
    html = browser.dump_dom(
        "ui_task_tab_failed_validation.frame.html", f"{FRAME_DOC}.documentElement.outerHTML"
    )
    text = browser.evaluate(f"{FRAME_DOC}.body.innerText")
    assert "Why this task failed" in text and "BatchFileError" in text
    assert "No OpenAI batches recorded" not in text
    rows = browser.evaluate(
        f"Array.from({FRAME_DOC}.querySelectorAll('.failure tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.innerText))"
    )
    assert [(r[0], r[1]) for r in rows] == [("2", "invalid_json_line")], rows
    assert API_KEY not in html


def test_fetch_tab_lists_the_landed_files(browser, api_server, airflow_home):
    query = urlencode({"dag_id": DAG_ID, "run_id": airflow_home["run_id"], "task_id": "fetch"})
    browser.open(f"{api_server}/openai-batch/ti?{query}", ready="document.querySelector('ul.landed')")
    browser.screenshot("ui_fetch_tab_page.png")
    text = browser.evaluate("document.body.innerText")
    assert "output.jsonl" in text and "errors.jsonl" in text and "results.jsonl" in text
    assert _bar(browser) == {"completed": "3", "failed": "2", "total": "5"}
