"""README.md stays true to the code.

Checks that every ``make <target>`` it shows exists in the Makefile, every
``airflow_batch_provider.*`` dotted name and every ``from airflow_batch_provider... import``
resolves, every operator/sensor/trigger/hook/error class it names exists, the parameter
tables of the operators, sensor and trigger list real parameters (with their real
defaults, and none missing), the connection extras are ones the hook reads, and every
``airflow-batch`` subcommand and flag exists in the CLI's parsers.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")

#: Classes the README names that belong to other packages (the comparison, Airflow itself).
FOREIGN = {
    "OpenAITriggerBatchOperator",  # apache-airflow-providers-openai
    "LLMBatchOperator",  # apache-airflow-providers-common-ai
    "BaseOperator",
    "BaseSensorOperator",
}
#: Where the package's public classes live.
OUR_MODULES = (
    "airflow_batch_provider.exceptions",
    "airflow_batch_provider.operators.submit",
    "airflow_batch_provider.operators.fetch",
    "airflow_batch_provider.sensors.openai_batch",
    "airflow_batch_provider.triggers.openai_batch",
    "airflow_batch_provider.hooks.openai_batch",
    "airflow_batch_provider.decorators.openai_batch",
    "airflow_batch_provider.batch_file",
    "airflow_batch_provider.links",
    "airflow_batch_provider.plugins.batch_monitor",
)
#: Parameter tables: a section whose heading names the class documents its parameters.
PARAM_TABLES = {
    "OpenAIBatchSubmitOperator": "airflow_batch_provider.operators.submit",
    "OpenAIBatchFetchOperator": "airflow_batch_provider.operators.fetch",
    "OpenAIBatchSensor": "airflow_batch_provider.sensors.openai_batch",
    "OpenAIBatchTrigger": "airflow_batch_provider.triggers.openai_batch",
}
#: Inherited parameters a table documents on purpose.
INHERITED_DOCUMENTED = {"OpenAIBatchSensor": {"timeout"}}


# ---- reading the README --------------------------------------------------------------------


def _code_text(text: str) -> str:
    """The README's code: fenced blocks, indented blocks and inline code spans."""
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    parts = [m.group(1) for m in fence.finditer(text)]
    rest = fence.sub("\n", text)
    previous_blank, in_block = True, False
    for line in rest.splitlines():
        indented = line.startswith("    ") and line.strip() != ""
        in_block = indented and (previous_blank or in_block)
        if in_block:
            parts.append(line)
        previous_blank = line.strip() == ""
    parts += re.findall(r"`([^`\n]+)`", rest)
    return "\n".join(parts)


CODE = _code_text(README)


def _sections(text: str) -> Iterator[tuple[str, str]]:
    """``(heading, body)`` for every Markdown heading (outside fenced code)."""
    heading, body = "", []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and re.match(r"^#{1,6} ", line):
            yield heading, "\n".join(body)
            heading, body = line, []
        else:
            body.append(line)
    yield heading, "\n".join(body)


def _section(title: str) -> str:
    bodies = [body for heading, body in _sections(README) if title in heading]
    assert bodies, f"README has no section titled {title!r}"
    return bodies[0]


def _table_rows(body: str) -> list[list[str]]:
    """Cells of the table rows whose first cell is code (header and rule rows skipped)."""
    rows = []
    for line in body.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# ---- make targets ----------------------------------------------------------------------------


def _makefile_targets() -> set[str]:
    targets: set[str] = set()
    for match in re.finditer(r"^([A-Za-z0-9_.][\w.\- ]*?)\s*:(?!=)", MAKEFILE, re.M):
        targets.update(t for t in match.group(1).split() if not t.startswith("."))
    return targets


def _readme_make_targets() -> set[str]:
    pattern = re.compile(r"(?<![\w/$.-])make[ \t]+(?:[A-Z_]+=\S*[ \t]+)*([a-z][\w-]*)")
    return {m.group(1) for m in pattern.finditer(CODE)}


def test_make_targets_exist():
    mentioned = _readme_make_targets()
    assert {"demo", "test"} <= mentioned, "the Quickstart's two commands are missing"
    missing = sorted(mentioned - _makefile_targets())
    assert not missing, f"README mentions make targets the Makefile lacks: {missing}"


# ---- dotted names, imports, classes ----------------------------------------------------------


def _resolve(dotted: str) -> Any:
    """Import the longest importable module prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(prefix)
        except ModuleNotFoundError as err:
            if err.name is not None and not prefix.startswith(err.name):
                raise  # a dependency is missing, not the README's module
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


DOTTED = sorted(set(re.findall(r"\bairflow_batch_provider(?:\.[A-Za-z_]\w*)+", README)))


def test_readme_names_dotted_paths():
    assert len(DOTTED) >= 10, DOTTED


@pytest.mark.parametrize("dotted", DOTTED)
def test_dotted_name_resolves(dotted):
    try:
        _resolve(dotted)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"README names {dotted}, which does not resolve: {err}")


_FROM_IMPORT = re.compile(r"^\s*from\s+(airflow_batch_provider[\w.]*)\s+import\s+([\w, ]+)$", re.M)
FROM_IMPORTS = sorted(
    {
        (module, name.strip())
        for module, names in _FROM_IMPORT.findall(CODE)
        for name in names.split(",")
        if name.strip()
    }
)


@pytest.mark.parametrize(("module", "name"), FROM_IMPORTS)
def test_code_imports_work(module, name):
    assert hasattr(importlib.import_module(module), name), f"from {module} import {name} fails"


def _our_class(name: str) -> Any:
    for module in OUR_MODULES:
        obj = getattr(importlib.import_module(module), name, None)
        if obj is not None:
            return obj
    return None


_CLASS_NAME = re.compile(r"\b([A-Z]\w*(?:Operator|Sensor|Trigger|Hook|Plugin|Template|Error|Link|Limits))\b")
CLASS_NAMES = sorted(set(_CLASS_NAME.findall(README)))


def test_readme_names_the_operators():
    assert {
        "OpenAIBatchSubmitOperator",
        "OpenAIBatchFetchOperator",
        "OpenAIBatchSensor",
        "OpenAIBatchTrigger",
        "OpenAIBatchHook",
    } <= set(CLASS_NAMES)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_class_exists(name):
    if name in FOREIGN or hasattr(builtins, name):
        return
    assert _our_class(name) is not None, f"README names class {name}, which the package does not define"


# ---- parameter tables ------------------------------------------------------------------------


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Every ``__init__`` parameter along the MRO; the most derived class's wins."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if name not in ("self", "args", "kwargs") and param.kind not in (
                param.VAR_POSITIONAL,
                param.VAR_KEYWORD,
            ):
                params.setdefault(name, param)
    return params


def _own_parameters(cls: type) -> set[str]:
    return {
        name
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    }


def _documented(class_name: str) -> dict[str, str]:
    """``{parameter: default cell}`` of the class's parameter table."""
    bodies = [body for heading, body in _sections(README) if f"`{class_name}`" in heading]
    assert bodies, f"README has no section whose heading names `{class_name}`"
    rows = _table_rows(bodies[0])
    assert rows, f"the `{class_name}` section has no parameter table"
    return {re.fullmatch(r"`(\w+)`", row[0]).group(1): row[1] for row in rows}  # type: ignore[union-attr]


@pytest.mark.parametrize("class_name", sorted(PARAM_TABLES))
def test_parameter_tables(class_name):
    cls = getattr(importlib.import_module(PARAM_TABLES[class_name]), class_name)
    params = _parameters(cls)
    documented = _documented(class_name)

    unknown = sorted(set(documented) - set(params))
    assert not unknown, f"{class_name} has no parameters {unknown}"
    undocumented = sorted(_own_parameters(cls) - set(documented))
    assert not undocumented, f"README's {class_name} table misses {undocumented}"
    inherited = set(documented) - _own_parameters(cls) - INHERITED_DOCUMENTED.get(class_name, set())
    assert not inherited, f"{class_name}: {sorted(inherited)} are inherited, not its own"

    for name, cell in documented.items():
        default = params[name].default
        if cell == "required":
            assert default is inspect.Parameter.empty, f"{class_name}.{name} has a default: {default!r}"
            continue
        literal = re.fullmatch(r"`([^`]+)`", cell)
        if literal is None:
            continue
        try:
            value = ast.literal_eval(literal.group(1))
        except (ValueError, SyntaxError):
            continue  # e.g. `[operators] default_deferrable`: a config value, not a literal
        assert default == value and type(default) is type(value), (
            f"README gives {class_name}.{name} the default {value!r}; the code has {default!r}"
        )


# ---- the hook's methods and the request-file functions ---------------------------------------

_CALL = re.compile(r"^([A-Za-z_][\w.]*)\((.*)\)$")


def _check_call(base: Any, span: str) -> None:
    """``span`` is ``name(arg, key=default, **rest)``: the callable and its parameters exist."""
    name, args = _CALL.match(span).groups()  # type: ignore[union-attr]
    target = base
    for part in name.split("."):
        target = getattr(target, part)
    params = inspect.signature(target).parameters
    for arg in filter(None, (a.strip() for a in args.split(", "))):
        if arg.startswith("**"):
            assert any(p.kind is p.VAR_KEYWORD and p.name == arg[2:] for p in params.values()), (
                f"{span}: {name} takes no {arg}"
            )
            continue
        key, _, shown = arg.partition("=")
        assert key in params, f"{span}: {name} has no parameter {key!r}"
        default = params[key].default
        if not shown or type(default).__name__ == "_HAS_DEFAULT_FACTORY_CLASS":
            continue
        assert default == ast.literal_eval(shown), f"{span}: {name}({key}=...) defaults to {default!r}"


def _spans(body: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", body)


def test_request_file_functions():
    from airflow_batch_provider import batch_file

    calls = [span for span in _spans(_section("## Request files")) if _CALL.match(span)]
    assert len(calls) >= 6, calls
    for span in calls:
        _check_call(batch_file, span)


def test_hook_methods():
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

    bullets = "\n".join(line for line in _section("## Hook").splitlines() if line.startswith(("- ", "  ")))
    names = []
    for span in _spans(bullets):
        if _CALL.match(span):
            _check_call(OpenAIBatchHook, span)
            names.append(span.split("(")[0])
        elif re.fullmatch(r"[a-z_]\w*", span):
            names.append(span)
    assert len(names) >= 15, names
    missing = [name for name in names if not callable(getattr(OpenAIBatchHook, name, None))]
    assert not missing, f"OpenAIBatchHook has no methods {missing}"


# ---- connection extras -----------------------------------------------------------------------


def test_connection_extras_are_read_by_the_hook():
    source = (ROOT / "airflow_batch_provider" / "hooks" / "clients.py").read_text(encoding="utf-8")
    rows = _table_rows(_section("## Connections"))
    extras = [name for row in rows for name in re.findall(r"`(\w+)`", row[0])]
    assert len(extras) >= 10, extras
    unread = [name for name in extras if f'"{name}"' not in source]
    assert not unread, f"README lists connection extras the hook does not read: {unread}"


# ---- the airflow-batch command line ----------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_cli_subcommands_exist():
    from airflow_batch_provider import cli

    mentioned = set(re.findall(r"(?<![\w-])airflow-batch[ \t]+([a-z][\w-]*)", CODE))
    assert {"validate", "emulator"} <= mentioned, mentioned
    missing = sorted(mentioned - set(_subparsers(cli._parser())))
    assert not missing, f"README mentions airflow-batch subcommands cli.py lacks: {missing}"


def test_cli_validate_flags_exist():
    from airflow_batch_provider import cli

    options = _options(_subparsers(cli._parser())["validate"])
    flags = {
        flag
        for line in CODE.splitlines()
        if "airflow-batch validate" in line
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", line)
    }
    missing = sorted(flags - options)
    assert not missing, f"README shows `airflow-batch validate` flags that do not exist: {missing}"


def test_cli_emulator_flags_exist():
    from airflow_batch_provider.emulator.server import build_parser

    options = _options(build_parser())
    body = _code_text(_section("## The emulator"))
    flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", body))
    assert {"--port", "--data-dir", "--profile"} <= flags, flags
    missing = sorted(flags - options)
    assert not missing, f"README's emulator section shows flags that do not exist: {missing}"


def test_use_it_in_your_own_airflow_section(monkeypatch):
    section = README.split("## Use it in your own Airflow", 1)[1].split("\n## ", 1)[0]
    for needle in ("airflow db migrate", "AIRFLOW_CONN_OPENAI_DEFAULT", "dags_folder", "airflow dags test"):
        assert needle in section, needle
    assert "AIRFLOW_PORT" in section and "receives upstream XComs" in section
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    compile(code, "README: Use it in your own Airflow", "exec")  # the example DAG is Python
    # make airflow honours AIRFLOW_PORT, as the section says.
    from devtools import devstack

    seen: dict[str, Any] = {}
    monkeypatch.setenv("AIRFLOW_PORT", "8091")
    monkeypatch.setattr(devstack, "status", lambda stack: seen.setdefault("port", None) or 0)
    monkeypatch.setattr(devstack, "start", lambda stack, port, **kw: seen.update(port=port) or 0)
    devstack.main(["start"])
    assert seen["port"] == 8091
