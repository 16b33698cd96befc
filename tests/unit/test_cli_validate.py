"""`airflow-batch validate` through the real console script / module, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from airflow_batch_provider import cli

SCRIPT = Path(sys.executable).parent / "airflow-batch"


def line(custom_id: str, model: str = "gpt-4o-mini") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return (
        json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        + "\n"
    )


def run(*args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "airflow_batch_provider.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "valid.jsonl"
    path.write_text(line("q-1") + line("q-2"))
    return path


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    path = tmp_path / "invalid.jsonl"
    rows = [line(f"q-{i}") for i in range(1, 7)] + [line("q-3"), "{oops\n", line("q-9", model="gpt-4o")]
    path.write_text("".join(rows))
    return path


def test_console_script_is_installed_and_validates(valid: Path) -> None:
    done = run("validate", str(valid), script=True)
    assert done.returncode == 0, done.stderr
    size = valid.stat().st_size
    expected = f"{valid}: valid: 2 requests, {size} bytes, endpoint /v1/chat/completions, model gpt-4o-mini\n"
    assert done.stdout == expected


def test_invalid_file_exits_1_with_line_numbered_problems(invalid: Path) -> None:
    done = run("validate", str(invalid))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith('line 7: duplicate custom_id "q-3" (first on line 3): ')
    assert lines[1].startswith("line 8: not valid JSON")
    assert lines[2].startswith('line 9: model "gpt-4o" differs from "gpt-4o-mini" (first on line 1)')
    assert lines[2].endswith('(custom_id "q-9")')
    assert lines[3].startswith(f"{invalid}: invalid: 3 problems in 9 requests")
    assert len(lines) == 4


def test_repeated_problems_are_grouped_and_long_lines_reported(tmp_path: Path) -> None:
    from airflow_batch_provider.batch_file import MAX_LINE_BYTES

    path = tmp_path / "mixed.jsonl"
    with path.open("w") as out:
        out.write("not json\n" * 200 + line("q-1"))
        out.write('{"custom_id": "q-2", "pad": "' + "x" * MAX_LINE_BYTES + '"}\n')
        out.write(line("q-1"))  # after the long line: still checked
    size = MAX_LINE_BYTES + len('{"custom_id": "q-2", "pad": ""}')
    done = run("validate", "--max-problems", "0", str(path))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("lines 1-200: not valid JSON (Expecting value at column 1)")
    assert lines[1].startswith(f"line 202: the line is {size:,} bytes, more than the {MAX_LINE_BYTES:,}-byte")
    assert lines[2].startswith('line 203: duplicate custom_id "q-1" (first on line 201)')
    assert lines[3].startswith(f"{path}: invalid: 202 problems in 203 requests")
    # --json stays one entry per problem.
    report = json.loads(run("validate", "--json", "--max-problems", "0", str(path)).stdout)
    assert len(report["problems"]) == 202
    assert [p["line"] for p in report["problems"][:3]] == [1, 2, 3]


def test_json_report(invalid: Path) -> None:
    done = run("validate", "--json", str(invalid))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["problem_count"] == 3 and report["source"] == str(invalid)
    assert [(p["line"], p["code"]) for p in report["problems"]] == [
        (7, "duplicate_custom_id"),
        (8, "invalid_json_line"),
        (9, "model_mismatch"),
    ]
    assert report["problems"][0]["custom_id"] == "q-3"


def test_json_report_of_a_valid_file(valid: Path) -> None:
    done = run("validate", str(valid), "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["request_count"] == 2 and report["problems"] == []


def test_max_problems_bounds_the_list_not_the_count(invalid: Path) -> None:
    done = run("validate", str(invalid), "--max-problems", "1")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "3 problems (showing 1)" in lines[1]
    assert len(run("validate", str(invalid), "--max-problems", "0").stdout.splitlines()) == 4  # 0: all


def test_declared_endpoint(valid: Path) -> None:
    assert run("validate", str(valid), "--endpoint", "/v1/chat/completions").returncode == 0
    assert run("validate", str(valid), "--endpoint", "chat/completions").returncode == 0
    done = run("validate", str(valid), "--endpoint", "/v1/embeddings")
    assert (
        done.returncode == 1
        and "url_mismatch" not in done.stdout
        and "differs from /v1/embeddings" in done.stdout
    )


def test_usage_errors_exit_2(valid: Path, tmp_path: Path) -> None:
    bad_endpoint = run("validate", str(valid), "--endpoint", "/v1/nope")
    assert bad_endpoint.returncode == 2 and "not a batch endpoint" in bad_endpoint.stderr
    missing = run("validate", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and missing.stdout == ""
    assert run().returncode == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["validate"],
        ["validate", "{valid}", "--max-problems", "-1"],
        ["validate", "{valid}", "--max-problems", "x"],
        ["frobnicate"],
        ["validate", "{tmp}"],
    ],
)
def test_more_usage_errors_in_process(argv: list[str], valid: Path, tmp_path: Path) -> None:
    assert cli.main([arg.format(valid=valid, tmp=tmp_path) for arg in argv]) == 2


def test_help_exits_0() -> None:
    done = run("validate", "--help")
    assert done.returncode == 0 and "--endpoint" in done.stdout and "--json" in done.stdout


def test_several_files(valid: Path, invalid: Path) -> None:
    both = run("validate", "--json", str(valid), str(invalid))
    assert both.returncode == 1
    reports = [json.loads(text) for text in both.stdout.splitlines()]
    assert [r["ok"] for r in reports] == [True, False]
    assert run("validate", str(valid), str(valid)).returncode == 0


def test_file_uri(valid: Path) -> None:
    assert run("validate", f"file://{valid}").returncode == 0


def test_empty_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    done = run("validate", str(path))
    assert done.returncode == 1 and done.stdout.startswith("file: the file has no request")


def test_emulator_subcommand_passes_every_argument_through(monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator is another module; stand in for it to check the delegation only.
    calls: list[list[str]] = []
    fake = types.ModuleType("airflow_batch_provider.emulator.server")
    fake.main = lambda argv: calls.append(list(argv)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow_batch_provider.emulator.server", fake)
    argv = ["emulator", "--help", "--port", "0", "--profile", "instant", "validate"]
    assert cli.main(argv) == 3
    assert calls == [argv[1:]]


def test_main_returns_an_int_in_process(valid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(valid)]) == 0
    assert "valid: 2 requests" in capsys.readouterr().out
    assert cli.main(["validate", "--nope"]) == 2
