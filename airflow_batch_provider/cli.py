"""The ``airflow-batch`` console script.

- ``airflow-batch validate FILE... [--endpoint E] [--azure] [--json] [--max-problems N]``: exit 0 when
  every file is valid, 1 when one is not, 2 for a usage error or an unreadable file.
- ``airflow-batch estimate FILE... [--model M] [--default-output-tokens N] [--json]``: input tokens
  (tiktoken), output-token bound and cost range at the batch rate; exit 0, 1 when a line is not
  a request line (skipped), 2 for a usage error or an unreadable file.
- ``airflow-batch emulator ...``: every further argument goes to
  :func:`airflow_batch_provider.emulator.server.main`.

Imports no Airflow, except to open a URI such as ``s3://bucket/key.jsonl`` (through
``ObjectStoragePath``, configured as for any task).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from airflow_batch_provider.batch_file.lines import BATCH_ENDPOINTS, normalize_endpoint, validate_file

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-batch", description="OpenAI Batch API tools for Airflow.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = commands.add_parser(
        "validate",
        help="check batch input files (JSONL) before uploading them",
        description="Check batch input files line by line; exit 0 valid, 1 invalid, 2 usage error.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="a path, or a URI such as s3://bucket/key")
    validate.add_argument(
        "--endpoint", help=f"the batch endpoint every line must use ({', '.join(sorted(BATCH_ENDPOINTS))})"
    )
    validate.add_argument(
        "--azure",
        action="store_true",
        help="the file is for Azure OpenAI: also accept its unversioned urls (/chat/completions)",
    )
    validate.add_argument("--json", action="store_true", help="print one JSON report per file (JSON Lines)")
    validate.add_argument(
        "--max-problems",
        type=int,
        default=100,
        metavar="N",
        help="problems listed per file (0: all; default 100)",
    )
    estimate = commands.add_parser(
        "estimate",
        help="estimate the tokens and cost of batch input files before submitting them",
        description="Count input tokens (tiktoken), bound output tokens and price both at the Batch API "
        "rate; streams each file. Exit 0, 1 when a line is not a request line, 2 usage error.",
    )
    estimate.add_argument("files", nargs="+", metavar="FILE", help="a path, or a URI such as s3://bucket/key")
    estimate.add_argument(
        "--model", help="count and price every request as this model (default: each line's)"
    )
    estimate.add_argument(
        "--default-output-tokens",
        type=int,
        metavar="N",
        help="output bound of a request that sets no max_tokens (default: the model's maximum output)",
    )
    estimate.add_argument("--json", action="store_true", help="print one JSON estimate per file (JSON Lines)")
    commands.add_parser(
        "emulator", help="run the local Batch API emulator (see `airflow-batch emulator --help`)"
    )
    return parser


def _open_target(name: str) -> Any:
    if "://" not in name or name.startswith("file://"):
        return name.removeprefix("file://")
    from airflow.sdk import ObjectStoragePath  # only for remote URIs: Airflow is slow to import

    return ObjectStoragePath(name)


def _validate(args: argparse.Namespace) -> int:
    if args.max_problems < 0:
        print("airflow-batch validate: --max-problems must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        endpoint = normalize_endpoint(args.endpoint) if args.endpoint else None
    except ValueError as error:
        print(f"airflow-batch validate: --endpoint: {error}", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for name in args.files:
        try:
            report = validate_file(
                _open_target(name),
                endpoint=endpoint,
                max_problems=args.max_problems or None,
                allow_unversioned_urls=args.azure,
            )
        except (OSError, ImportError, ValueError) as error:
            print(f"airflow-batch validate: cannot read {name}: {error}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        report.source = name
        print(json.dumps(report.to_dict(), ensure_ascii=False) if args.json else report.format())
        if not report.ok and status == EXIT_OK:
            status = EXIT_INVALID
    return status


def _estimate(args: argparse.Namespace) -> int:
    from airflow_batch_provider.batch_file.estimate import estimate_file, format_usd

    if args.default_output_tokens is not None and args.default_output_tokens < 0:
        print("airflow-batch estimate: --default-output-tokens must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for name in args.files:
        try:
            result = estimate_file(
                _open_target(name), model=args.model, default_output_tokens=args.default_output_tokens
            )
        except (OSError, ImportError, ValueError) as error:
            print(f"airflow-batch estimate: cannot read {name}: {error}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        data = result.to_dict()
        if args.json:
            print(json.dumps({"source": name, **data}, ensure_ascii=False))
        else:
            print(f"{name}: {result.summary()}")
            for row in data["by_model"]:
                print(
                    f"  model {row['model']}: {row['requests']:,} requests, {row['input_tokens']:,} input "
                    f"tokens, output bound {row['output_tokens_bound']:,}, "
                    f"{format_usd(row['cost_low_usd'])} to {format_usd(row['cost_high_usd'])} USD "
                    f"({row['tokenizer']})"
                )
            for note in data["notes"]:
                print(f"  note: {note}")
        if result.skipped_lines and status == EXIT_OK:
            status = EXIT_INVALID
    return status


def _emulator(argv: list[str]) -> int:
    try:
        from airflow_batch_provider.emulator.server import main as emulator_main
    except ImportError as error:
        print(f"airflow-batch emulator: the emulator is not available: {error}", file=sys.stderr)
        return EXIT_USAGE
    return int(emulator_main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "emulator":  # before argparse, so that --help etc. reach the emulator
        return _emulator(args[1:])
    try:
        namespace = _parser().parse_args(args)
    except SystemExit as exit_:  # argparse: 0 after --help, 2 on a usage error
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    return _estimate(namespace) if namespace.command == "estimate" else _validate(namespace)


if __name__ == "__main__":
    sys.exit(main())
