"""The UI plugin's FastAPI app with Airflow's own auth, real DAG runs and the emulator.

The plugin app is mounted under its prefix in a FastAPI app that carries Airflow's
auth manager (SimpleAuthManager), as the api-server does; requests go through
``TestClient`` with JWTs the auth manager signed. Task data comes from real
``dag.test()`` runs (XComs and rendered fields in the session's sqlite DB), batch
state from the emulator over HTTP.
"""

from __future__ import annotations

import inspect
import json
import time
from importlib.metadata import entry_points

import pytest

from tests.integration import _dag_env

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env

SECRET_KEY = "sk-plugin-test-Secret-0123456789abcdef"
PREFIX = "/openai-batch"
pytestmark = pytest.mark.emulator(api_key=SECRET_KEY)


def _request_lines(n: int, failing: int = 0) -> str:
    """``n`` chat requests; the first ``failing`` make the emulator's model answer 400."""
    lines = []
    for i in range(n):
        text = f"question {i}" + (" [[emulator:context_length_exceeded]]" if i < failing else "")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        lines.append(
            json.dumps({"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    return "\n".join(lines) + "\n"


SUBMIT_DAG = """
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
        OpenAIBatchSubmitOperator(
            task_id="submit",
            input_path={path!r},
            deferrable=False,
            poll_interval=0.05,
            max_poll_interval=0.2,
            timeout=30,
            {extra}
        )
"""

# A task that makes a batch whose input fails the service's validation (line 2 is not
# JSON) and records it as the sensor does, so its tab shows validation errors.
BAD_INPUT_DAG = """
    from airflow.sdk import DAG, task
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
    from airflow_batch_provider.links import persist_batch_links

    with DAG({dag_id!r}, schedule=None) as dag:
        @task
        def make_bad_batch(**context):
            hook = OpenAIBatchHook()
            good = b'{{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
            good += b'"body": {{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "x"}}]}}}}'
            uploaded = hook.upload_file([good + b"\\n", b"this is not json\\n"], filename="bad.jsonl")
            batch = hook.create_batch(uploaded.id, "/v1/chat/completions")
            persist_batch_links(context, hook, [batch.id])

        make_bad_batch()
"""


SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
ALLOW_LIST = "tests.integration._allow_list_auth.DagAllowListAuthManager"


@pytest.fixture
def auth(airflow_db, monkeypatch, request):
    """Airflow's SimpleAuthManager (no all-admins shortcut; or the class given as the fixture's
    parameter) and tokens for an admin and a viewer."""
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", getattr(request, "param", SIMPLE))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "plugin-test-jwt-secret-" + "x" * 64)
    api_app.purge_cached_app()  # forget any auth manager made under another configuration
    manager = api_app.create_auth_manager()
    yield {
        "manager": manager,
        "admin": manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN")),
        "viewer": manager.generate_jwt(SimpleAuthManagerUser(username="vera", role="VIEWER")),
    }
    api_app.purge_cached_app()


@pytest.fixture
def client(auth):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from airflow_batch_provider.plugins.batch_monitor import OpenAIBatchMonitorPlugin

    root = FastAPI()
    root.state.auth_manager = auth["manager"]
    [spec] = OpenAIBatchMonitorPlugin.fastapi_apps
    root.mount(spec["url_prefix"], spec["app"])  # what the api-server's init_plugins does
    with TestClient(root) as test_client:
        yield test_client


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ti(dag_run, task_id: str, map_index: str = "-1") -> dict[str, str]:
    return {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id, "task_id": task_id, "map_index": map_index}


def _submit(dag_env, dag_id: str, text: str, extra: str = ""):
    src = dag_env.data / f"{dag_id}.jsonl"
    src.write_text(text)
    dag = dag_env.write_dag(dag_id, SUBMIT_DAG.format(dag_id=dag_id, path=str(src), extra=extra))
    return dag_env.run(dag)


def test_plugin_is_registered_for_the_api_server():
    from airflow_batch_provider.get_provider_info import get_provider_info
    from airflow_batch_provider.plugins.batch_monitor import OpenAIBatchMonitorPlugin

    names = {ep.name: ep.value for ep in entry_points(group="airflow.plugins")}
    assert names.get("openai_batch_monitor") == (
        "airflow_batch_provider.plugins.batch_monitor:OpenAIBatchMonitorPlugin"
    ), "reinstall the package (make venv) so the airflow.plugins entry point exists"
    assert {
        "name": "openai_batch_monitor",
        "plugin-class": "airflow_batch_provider.plugins.batch_monitor.OpenAIBatchMonitorPlugin",
    } in get_provider_info()["plugins"]
    tab, nav = OpenAIBatchMonitorPlugin.external_views
    assert tab["destination"] == "task_instance" and nav["destination"] == "nav"
    for placeholder in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"):
        assert placeholder in tab["href"]
    assert nav["href"].endswith("/openai-batch/batches") and nav["nav_top_level"] is True


def test_task_view_shows_progress_usage_cost_from_the_service(dag_env, client, auth):
    dr = _submit(dag_env, "ui_counts", _request_lines(5, failing=2))
    assert dag_env.states(dr) == {"submit": "success"}
    manifest = dag_env.xcom(dr, "submit")

    response = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"]))

    assert response.status_code == 200, response.text
    view = response.json()
    assert view["conn_id"] == "openai_default"
    assert view["batch_ids"] == manifest["batch_ids"]
    [batch] = view["batches"]
    assert batch["source"] == "live" and batch["status"] == "completed"
    assert batch["progress"] == {
        "total": 5,
        "completed": 3,
        "failed": 2,
        "pending": 0,
        "completed_pct": 60.0,
        "failed_pct": 40.0,
        "done_pct": 100.0,
    }
    assert batch["outcome"] == "partial"
    assert batch["usage"]["total_tokens"] > 0 and batch["usage"]["input_tokens"] > 0
    assert batch["cost"]["matched"] == "gpt-4o-mini" and batch["cost"]["usd"] > 0
    assert batch["console_url"] == dag_env.emulator.batch_page_url(batch["id"])
    assert batch["shard"]["start_line"] == 1 and batch["shard"]["line_count"] == 5
    assert batch["timings"]["created_at"] <= batch["timings"]["completed_at"]
    assert batch["eta"]["text"] == "finished"
    assert view["totals"]["progress"]["completed"] == 3 and view["totals"]["all_terminal"] is True
    assert view["refresh"] == 0  # task finished, batches terminal: nothing to refresh

    page = client.get(f"{PREFIX}/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"]))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-completed="3" data-failed="2" data-total="5"' in page.text
    assert "3 completed" in page.text and "2 failed" in page.text
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert SECRET_KEY not in page.text and SECRET_KEY not in response.text

    # Airflow 3.1's UI puts the run id in the tab's URL unencoded: "+00:00" arrives as " 00:00".
    assert "+" in dr.run_id
    spaced = {**_ti(dr, "submit"), "run_id": dr.run_id.replace("+", " ")}
    assert (
        client.get(f"{PREFIX}/api/ti", params=spaced, headers=_as(auth["admin"])).json()["batch_ids"]
        == (manifest["batch_ids"])
    )


FETCH_DAG = """
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
        submit = OpenAIBatchSubmitOperator(
            task_id="submit", input_path={path!r}, deferrable=False, poll_interval=0.05, max_poll_interval=0.2
        )
        OpenAIBatchFetchOperator(task_id="fetch", batches=submit.output, destination={dest!r})
"""


def test_fetch_task_view_links_the_landed_files(dag_env, client, auth):
    src, dest = dag_env.data / "fetch_in.jsonl", dag_env.data / "landed"
    src.write_text(_request_lines(4, failing=1))
    dag = dag_env.write_dag(
        "ui_fetch", FETCH_DAG.format(dag_id="ui_fetch", path=str(src), dest=f"file://{dest}/")
    )
    dr = dag_env.run(dag)
    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}

    view = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "fetch"), headers=_as(auth["admin"])).json()

    [batch] = view["batches"]
    assert view["conn_id"] == "openai_default" and batch["source"] == "live"
    assert batch["progress"]["completed"] == 3 and batch["progress"]["failed"] == 1
    kinds = {row["kind"]: row for row in batch["landed"]}
    assert set(kinds) >= {"output", "errors"}
    assert kinds["output"]["uri"].endswith(f"{batch['id']}/output.jsonl") and kinds["output"]["lines"] == 3
    assert kinds["output"]["href"] is None  # a local path has no page a browser could open
    assert view["fetch"]["manifest_uri"].endswith("/landed/manifest.json")
    assert view["fetch"]["results_uri"].endswith("/landed/results.jsonl")
    page = client.get(f"{PREFIX}/ti", params=_ti(dr, "fetch"), headers=_as(auth["admin"])).text
    assert "Landed files" in page and "Landed results" in page and "results.jsonl" in page


def test_task_view_falls_back_to_the_recorded_state_when_the_service_is_down(dag_env, client, auth):
    dr = _submit(dag_env, "ui_down", _request_lines(2))
    dag_env.emulator.stop()

    view = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"])).json()

    [batch] = view["batches"]
    assert batch["source"] == "xcom" and batch["status"] == "completed"
    assert batch["progress"]["completed"] == 2
    assert "could not reach the service" in batch["read_error"] or "connect" in batch["read_error"]
    page = client.get(f"{PREFIX}/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"])).text
    assert "showing the state the task recorded last" in page
    assert SECRET_KEY not in page


@pytest.mark.emulator(api_key=SECRET_KEY, requests_per_second=1)
def test_task_view_of_a_running_batch_has_eta_and_refreshes(dag_env, client, auth):
    # 40 s of work at 1 request/s: still running however slowly the page answers under load.
    dr = _submit(dag_env, "ui_running", _request_lines(40), extra="wait_for_completion=False,")
    deadline = time.monotonic() + 60  # a bound for failure only: no load reaches it
    while True:
        view = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"])).json()
        [batch] = view["batches"]
        if batch["progress"]["completed"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)

    assert batch["status"] == "in_progress" and batch["terminal"] is False
    assert batch["progress"]["total"] == 40 and 1 <= batch["progress"]["completed"] < 40
    assert batch["eta"]["seconds"] is not None and batch["eta"]["seconds"] > 0
    assert view["refresh"] > 0
    page = client.get(f"{PREFIX}/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"])).text
    assert 'id="auto-refresh"' in page and "left at the current rate" in page


def test_task_view_lists_validation_errors_with_line_numbers(dag_env, client, auth):
    dag = dag_env.write_dag("ui_bad_input", BAD_INPUT_DAG.format(dag_id="ui_bad_input"))
    dr = dag_env.run(dag)
    assert dag_env.states(dr) == {"make_bad_batch": "success"}

    deadline = time.monotonic() + 60  # a bound for failure only: no load reaches it
    while True:
        view = client.get(
            f"{PREFIX}/api/ti", params=_ti(dr, "make_bad_batch"), headers=_as(auth["admin"])
        ).json()
        if view["batches"][0]["status"] == "failed" or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    [batch] = view["batches"]
    assert batch["status"] == "failed" and batch["outcome"] == "bad"
    assert batch["errors"] == [
        {
            "code": "invalid_json_line",
            "message": "This line is not parseable as valid JSON.",
            "param": None,
            "line": 2,
            "input_line": None,
        }
    ]
    page = client.get(f"{PREFIX}/ti", params=_ti(dr, "make_bad_batch"), headers=_as(auth["admin"])).text
    assert "Validation errors" in page and "<code>invalid_json_line</code>" in page
    assert '<td class="num">2</td>' in page


def test_task_view_of_tasks_without_batches_mapped_tasks_and_no_task(dag_env, client, auth):
    dag = dag_env.write_dag(
        "ui_plain",
        """
        from airflow.sdk import DAG, task
        with DAG("ui_plain", schedule=None) as dag:
            @task
            def plain():
                return 1

            @task
            def mapped(x):
                return x

            plain()
            mapped.expand(x=[1, 2])
        """,
    )
    dr = dag_env.run(dag)
    admin = _as(auth["admin"])

    ok = client.get(f"{PREFIX}/ti", params=_ti(dr, "plain", "{MAP_INDEX}"), headers=admin)
    assert ok.status_code == 200 and "No OpenAI batches recorded" in ok.text
    one = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "mapped", "1"), headers=admin)
    assert one.status_code == 200 and one.json()["task_instance"]["map_index"] == 1
    overview = client.get(f"{PREFIX}/ti", params=_ti(dr, "mapped", "{MAP_INDEX}"), headers=admin)
    assert overview.status_code == 404 and "open one of its 2 mapped instances" in overview.text
    missing = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "nope"), headers=admin)
    assert missing.status_code == 404


def _make_batches(emulator, count: int, *, fail_validation: int = 0, metadata=None) -> list[str]:
    client = emulator.client()
    ids = []
    for i in range(count):
        bad = i < fail_validation
        text = b"not json\n" if bad else _request_lines(1).encode()
        uploaded = client.files.create(file=(f"in{i}.jsonl", text), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )
        ids.append(batch.id)
    deadline = time.monotonic() + 60  # a bound for failure only: no load reaches it
    while time.monotonic() < deadline:
        if all(client.batches.retrieve(b).status in ("completed", "failed") for b in ids):
            break
        time.sleep(0.1)
    return ids


def test_batches_list_filters_and_pages(dag_env, client, auth):
    ids = _make_batches(dag_env.emulator, 3, fail_validation=1)  # newest first: ids[2], ids[1], ids[0]
    admin = _as(auth["admin"])

    everything = client.get(
        f"{PREFIX}/api/batches", params={"conn_id": "openai_default"}, headers=admin
    ).json()
    assert everything["error"] is None
    assert [b["id"] for b in everything["batches"]] == ids[::-1]
    assert "openai_default" in everything["conn_ids"]

    failed = client.get(f"{PREFIX}/api/batches", params={"status": "failed"}, headers=admin).json()
    assert [b["id"] for b in failed["batches"]] == [ids[0]]
    assert failed["batches"][0]["errors"][0]["line"] == 1

    first = client.get(f"{PREFIX}/api/batches", params={"limit": 2}, headers=admin).json()
    assert [b["id"] for b in first["batches"]] == [ids[2], ids[1]]
    assert first["has_more"] is True and first["next_after"] == ids[1]
    second = client.get(
        f"{PREFIX}/api/batches", params={"limit": 2, "after": first["next_after"]}, headers=admin
    )
    assert [b["id"] for b in second.json()["batches"]] == [ids[0]] and second.json()["has_more"] is False

    page = client.get(f"{PREFIX}/batches", params={"limit": 2}, headers=admin)
    assert page.status_code == 200
    assert f"after={ids[1]}" in page.text and "older" in page.text
    assert page.text.count('role="progressbar"') == 2 and 'id="auto-refresh"' in page.text


def test_batches_page_escapes_everything_and_never_shows_a_key(dag_env, client, auth, monkeypatch):
    evil = '<img src=x onerror="alert(1)">'
    _make_batches(
        dag_env.emulator, 1, metadata={"airflow_dag_id": evil, "airflow_task_id": "t", "airflow_run_id": "r"}
    )
    wrong_key = "sk-wrong-Key-abcdef0123456789abcdef"
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_WRONG",
        json.dumps({"conn_type": "openai", "host": dag_env.emulator.base_url, "password": wrong_key}),
    )
    admin = _as(auth["admin"])

    page = client.get(f"{PREFIX}/batches", headers=admin).text
    assert evil not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert SECRET_KEY not in page

    refused = client.get(f"{PREFIX}/batches", params={"conn_id": "openai_wrong"}, headers=admin)
    assert refused.status_code == 200
    assert "Could not list the batches of connection" in refused.text and "401" in refused.text
    assert wrong_key not in refused.text and SECRET_KEY not in refused.text
    assert "openai_wrong" in client.get(f"{PREFIX}/api/batches", headers=admin).json()["conn_ids"]


def test_auth_is_airflows_own(dag_env, client, auth):
    dr = _submit(dag_env, "ui_auth", _request_lines(1))
    ti = _ti(dr, "submit")

    for path, params in (("/api/ti", ti), ("/ti", ti), ("/api/batches", {}), ("/batches", {})):
        anonymous = client.get(f"{PREFIX}{path}", params=params)
        assert anonymous.status_code == 401, path
        assert SECRET_KEY not in anonymous.text
        forged = client.get(f"{PREFIX}{path}", params=params, headers=_as("not-a-jwt"))
        assert forged.status_code == 403, path
    assert "Sign in to Airflow" in client.get(f"{PREFIX}/ti", params=ti).text  # HTML routes explain
    assert client.get(f"{PREFIX}/api/ti", params=ti).json() == {"detail": "Not authenticated"}

    # The UI's session cookie is a login too.
    client.cookies.set("_token", auth["viewer"])
    assert client.get(f"{PREFIX}/api/ti", params=ti).status_code == 200
    client.cookies.clear()

    # A viewer sees task tabs but may not use a connection's key to list its batches.
    viewer = _as(auth["viewer"])
    assert client.get(f"{PREFIX}/api/ti", params=ti, headers=viewer).status_code == 200
    assert client.get(f"{PREFIX}/api/batches", headers=viewer).status_code == 403
    assert client.get(f"{PREFIX}/batches", headers=viewer).status_code == 403

    assert client.get(f"{PREFIX}/health").json() == {"status": "ok"}
    icon = client.get(f"{PREFIX}/static/icon.svg")
    assert icon.status_code == 200 and "<svg" in icon.text


def _give_to_team(dag_id: str, team: str) -> None:
    """Put ``dag_id`` in a DAG bundle owned by ``team`` (Airflow's multi-team model), as a
    deployment with one bundle per team has it."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.team import Team
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        bundle = DagBundleModel(name=f"bundle-{team}")
        bundle.teams.append(Team(name=team))
        session.add(bundle)
        session.flush()
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(bundle_name=bundle.name))


@pytest.mark.parametrize("auth", [SIMPLE, ALLOW_LIST], ids=["teams", "allow_list"], indirect=True)
def test_a_user_who_may_read_dag_a_sees_nothing_of_dag_b(dag_env, client, auth, monkeypatch):
    """alice (OP: she may read the connection) may read DAG A, not DAG B: by team with
    SimpleAuthManager (DAG bundles owned by teams), or by the allow-list manager. No route
    shows her DAG B's batches, nor batches of no DAG."""
    import uuid

    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from airflow_batch_provider.plugins import app as plugin_app
    from tests.integration._allow_list_auth import DagAllowListAuthManager

    by_team = not isinstance(auth["manager"], DagAllowListAuthManager)
    if by_team and "teams" not in inspect.signature(SimpleAuthManagerUser).parameters:
        pytest.skip("this Airflow's SimpleAuthManager has no teams; the allow_list case covers it")
    tag = uuid.uuid4().hex[:8]
    dag_a, dag_b = f"ui_team_a_{tag}", f"ui_team_b_{tag}"
    run_a = _submit(dag_env, dag_a, _request_lines(1))
    run_b = _submit(dag_env, dag_b, _request_lines(2))
    [batch_a], [batch_b] = (dag_env.xcom(r, "submit")["batch_ids"] for r in (run_a, run_b))
    [untagged] = _make_batches(dag_env.emulator, 1)  # newest: no Airflow identity in its metadata
    if by_team:
        _give_to_team(dag_a, f"a{tag}")
        _give_to_team(dag_b, f"b{tag}")
        user = SimpleAuthManagerUser(username="alice", role="OP", teams=[f"a{tag}"])
    else:
        monkeypatch.setitem(DagAllowListAuthManager.allowed, "alice", {dag_a})
        user = SimpleAuthManagerUser(username="alice", role="OP")
    alice = _as(auth["manager"].generate_jwt(user))
    admin = _as(auth["admin"])

    everything = client.get(f"{PREFIX}/api/batches", headers=admin).json()
    assert [b["id"] for b in everything["batches"]] == [untagged, batch_b, batch_a]

    hidden = (batch_b, dag_b, untagged, run_b.run_id)
    listing = client.get(f"{PREFIX}/api/batches", headers=alice)
    assert listing.status_code == 200 and [b["id"] for b in listing.json()["batches"]] == [batch_a]
    one = client.get(f"{PREFIX}/api/batches", params={"limit": 1}, headers=alice).json()
    assert [b["id"] for b in one["batches"]] == [batch_a]  # found past the newer hidden ones
    done = client.get(f"{PREFIX}/api/batches", params={"status": "completed"}, headers=alice).json()
    assert [b["id"] for b in done["batches"]] == [batch_a]
    # Paging past hidden batches: the cursor is sealed, not the hidden batch's id.
    scan, chunk = plugin_app.LIST_MAX_SCAN, plugin_app.LIST_CHUNK
    monkeypatch.setattr(plugin_app, "LIST_MAX_SCAN", 1)  # one batch per request and per page
    monkeypatch.setattr(plugin_app, "LIST_CHUNK", 1)
    first = client.get(f"{PREFIX}/api/batches", params={"limit": 1}, headers=alice)
    assert first.json()["batches"] == [] and first.json()["has_more"] is True
    sealed = first.json()["next_after"]
    assert sealed.startswith("c1.") and untagged not in first.text
    second = client.get(f"{PREFIX}/api/batches", params={"limit": 1, "after": sealed}, headers=alice).json()
    assert second["batches"] == [] and second["next_after"].startswith("c1.")  # batch_b: hidden too
    third = client.get(
        f"{PREFIX}/api/batches", params={"limit": 1, "after": second["next_after"]}, headers=alice
    ).json()
    assert [b["id"] for b in third["batches"]] == [batch_a]
    forged = client.get(f"{PREFIX}/api/batches", params={"after": "c1.forged"}, headers=alice)
    assert forged.status_code == 400
    monkeypatch.setattr(plugin_app, "LIST_MAX_SCAN", scan)
    monkeypatch.setattr(plugin_app, "LIST_CHUNK", chunk)
    page = client.get(f"{PREFIX}/batches", headers=alice)
    assert page.status_code == 200 and batch_a in page.text
    for response in (listing, page):
        for value in hidden:
            assert value not in response.text

    for path in ("/api/ti", "/ti"):
        assert client.get(f"{PREFIX}{path}", params=_ti(run_b, "submit"), headers=alice).status_code == 403
        mine = client.get(f"{PREFIX}{path}", params=_ti(run_a, "submit"), headers=alice)
        assert mine.status_code == 200 and batch_a in mine.text
        for value in hidden:
            assert value not in mine.text


def test_task_tab_reads_live_only_through_a_connection_the_user_may_read(dag_env, client, auth):
    dr = _submit(dag_env, "ui_conn_access", _request_lines(2))
    params = _ti(dr, "submit")

    viewer = client.get(f"{PREFIX}/api/ti", params=params, headers=_as(auth["viewer"])).json()

    [batch] = viewer["batches"]
    assert batch["source"] == "xcom" and batch["status"] == "completed"  # what the task recorded
    assert any("needs read access to connection 'openai_default'" in n for n in viewer["notices"])
    assert batch["read_error"] == "not read live"  # the connection's key was not used
    page = client.get(f"{PREFIX}/ti", params=params, headers=_as(auth["viewer"])).text
    assert "showing the state the task recorded last" in page
    admin = client.get(f"{PREFIX}/api/ti", params=params, headers=_as(auth["admin"])).json()
    assert admin["batches"][0]["source"] == "live"


def test_task_tab_reads_a_manifest_only_under_the_tasks_destination(dag_env, client, auth):
    from airflow.models.xcom import XComModel

    from airflow_batch_provider.links import LANDED_MANIFEST_XCOM_KEY

    src, dest = dag_env.data / "planted_in.jsonl", dag_env.data / "landed"
    src.write_text(_request_lines(1))
    dag = dag_env.write_dag(
        "ui_planted", FETCH_DAG.format(dag_id="ui_planted", path=str(src), dest=f"file://{dest}/")
    )
    dr = dag_env.run(dag)
    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    planted = dag_env.data / "elsewhere" / "manifest.json"
    planted.parent.mkdir()
    planted.write_text(json.dumps({"batch_ids": ["batch_planted"], "conn_id": "openai_other"}))
    # A user who may write XComs points the tab at another manifest.
    XComModel.set(
        LANDED_MANIFEST_XCOM_KEY, f"file://{planted}", dag_id=dr.dag_id, task_id="fetch", run_id=dr.run_id
    )

    view = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "fetch"), headers=_as(auth["admin"])).json()

    assert "batch_planted" not in view["batch_ids"] and view["conn_id"] == "openai_default"
    assert any("outside the task's destination" in n for n in view["notices"])
    assert [b["source"] for b in view["batches"]] == ["live"]


def test_task_view_of_a_submit_that_failed_validation_says_why(dag_env, client, auth):
    lines = _request_lines(3).splitlines(keepends=True)
    lines[1] = '{"custom_id": "q-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": \n'
    dr = _submit(dag_env, "ui_invalid_submit", "".join(lines))
    assert dag_env.states(dr) == {"submit": "failed"}

    view = client.get(f"{PREFIX}/api/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"])).json()
    assert view["batches"] == [] and view["failure"]["error"] == "BatchFileError"
    assert [(p["line"], p["code"]) for p in view["failure"]["problems"]] == [(2, "invalid_json_line")]
    page = client.get(f"{PREFIX}/ti", params=_ti(dr, "submit"), headers=_as(auth["admin"])).text
    assert "Why this task failed" in page and "No OpenAI batches recorded" not in page
