"""OpenAIBatchFetchOperator: land results, account for every request, resubmit, tell lineage.

Thin by design: the join and the accounting live in :mod:`airflow_batch_provider.results`,
atomic landing in :mod:`airflow_batch_provider.storage` (through the hook), identity and
re-attach decisions in :mod:`airflow_batch_provider.submission.identity`, the manifest in
:mod:`airflow_batch_provider.results.manifest`, lineage and Asset events in
:mod:`airflow_batch_provider.lineage`. This module wires them together.

Landed layout under ``destination``::

    <batch_id>/output.jsonl   <batch_id>/errors.jsonl   (every batch of every round)
    results.jsonl             one line per input request, in input order
    manifest.json             what was fetched, counted, paid and where it is
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseOperator

from airflow_batch_provider.batch_file.estimate import check_budget, estimate_file, parse_budget
from airflow_batch_provider.batch_file.lines import ShardLimits, iter_lines
from airflow_batch_provider.exceptions import BatchFileError, BatchProviderError, ReconciliationError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.lineage import asset_extra, emit_asset_events, fetch_lineage
from airflow_batch_provider.links import OpenAIBatchManifestLink, persist_landed_manifest
from airflow_batch_provider.payloads import BatchSummary, FetchManifest, FetchRound, FetchState, WaitEvent
from airflow_batch_provider.pricing import format_usd
from airflow_batch_provider.results import manifest as fm
from airflow_batch_provider.results.join import BatchResults, InputShard, join_results
from airflow_batch_provider.storage import (
    as_object_storage_path,
    checksum_of,
    conn_id_of,
    landing_path,
    public_text,
    public_uri,
    write_atomically,
)
from airflow_batch_provider.submission.identity import deadline_from, run_horizon, task_identity
from airflow_batch_provider.submission.service import prepare_input, submit_shards
from airflow_batch_provider.waiting.outcome import ERROR_REASONS
from airflow_batch_provider.waiting.status import BatchStatus, summarize_batch

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context, ObjectStoragePath

#: XCom key of the fetch's state while it waits (ids, sizes and checksums; never results).
STATE_XCOM_KEY = "fetch_state"
_CHUNK = 1024 * 1024


class OpenAIBatchFetchOperator(BaseOperator):
    """Land the results of OpenAI batches in object storage, joined to their requests.

    Streams every batch's output and error file to ``<destination>/<batch_id>/``
    (atomically; a re-run skips files already landed with the same sha256), writes
    ``results.jsonl`` (one line per input request, in input order, with its status and
    response or error) and ``manifest.json`` (counts, usage, estimated cost, timings,
    landed files with sha256). Fails when a request is unaccounted for or too few
    succeeded. Optionally resubmits expired and retryable requests as new batches
    (idempotently) and merges their results. Returns a small summary as XCom.

    :param batches: The submit operator's manifest (``submit.output``), a batch id or a
        list of batch ids (templated). Batches still running are waited for (deferred).
    :param destination: Directory for the results: a URL such as
        ``s3://bucket/evals/{{ ds }}/``, a local path or an ``ObjectStoragePath`` (templated).
    :param conn_id: The ``openai`` connection; default: the manifest's, else ``openai_default``.
    :param destination_conn_id: Airflow connection of the destination storage, when the
        URL does not name one (``s3://conn_id@bucket/...`` does).
    :param input_uri: The input JSONL to join with (templated); default: the manifest's
        ``input_uri`` when readable, else the input files uploaded to the service.
    :param write_results: Write ``results.jsonl`` (default True). The join runs either way.
    :param min_success_ratio: Fail when fewer than this share (0..1) of requests succeeded.
    :param resubmit: Resubmit requests that expired or failed with a retryable error
        (429, 5xx, rate or token limits) as new batches; a request the model rejected
        (400) never is.
    :param max_resubmits: Most resubmission rounds.
    :param prices: Price overrides for the cost estimate, ``{"model-prefix": {"input",
        "cached_input", "output"}}`` in USD per 1M tokens at the batch rate.
    :param poll_interval: Seconds between status checks while waiting.
    :param max_poll_interval: Polling backs off up to this.
    :param timeout: Seconds (or timedelta) to wait for one round, from its batches' creation.
    :param max_cost_usd: Budget in USD of each resubmission round (templated): a round whose
        estimated cost's upper bound exceeds it fails before anything is uploaded. ``None``: no guard.
    """

    template_fields: Sequence[str] = ("batches", "destination", "conn_id", "input_uri", "max_cost_usd")
    operator_extra_links = (OpenAIBatchManifestLink(),)
    template_fields_renderers = {"batches": "json"}
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        batches: Any,
        destination: str | ObjectStoragePath,
        conn_id: str | None = None,
        destination_conn_id: str | None = None,
        input_uri: str | None = None,
        write_results: bool = True,
        min_success_ratio: float | None = None,
        resubmit: bool = False,
        max_resubmits: int = 1,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        timeout: float | timedelta | None = None,
        max_cost_usd: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if min_success_ratio is not None and not 0.0 <= min_success_ratio <= 1.0:
            raise ValueError(f"min_success_ratio must be between 0 and 1, got {min_success_ratio}")
        if max_resubmits < 0:
            raise ValueError(f"max_resubmits must be >= 0, got {max_resubmits}")
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ValueError("poll_interval must be > 0 and max_poll_interval >= poll_interval")
        self.batches = batches
        #: The landed manifest of this run ("" until it lands): the manifest link reads it.
        self._landed_manifest_uri = ""
        self.destination = destination
        self.conn_id = conn_id
        self.destination_conn_id = destination_conn_id
        self.input_uri = input_uri
        self.write_results = write_results
        self.min_success_ratio = min_success_ratio
        self.resubmit = resubmit
        self.max_resubmits = max_resubmits
        self.prices = prices
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.max_cost_usd = max_cost_usd
        self._manifest: FetchManifest | None = None  # for lineage, set by the method that finished

    # ---- entry points ------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        source = fm.normalize_batches(self.batches)  # ids checked before any path is built
        conn_id = self.conn_id or source.get("conn_id") or OpenAIBatchHook.default_conn_name
        state: FetchState = {
            "conn_id": conn_id,
            "source": source,
            "destination": self._destination_text(),
            # Recorded (XCom, trigger kwargs, manifest) without query or user info: a presigned
            # URL's signature is there. The operator's own input_uri is re-rendered on resume.
            "input_uri": public_uri(self.input_uri or source.get("input_uri")),
            "input_conn_id": None if self.input_uri else _input_conn_id(source),
            "rounds": [{"round": 0, "batch_ids": source["batch_ids"], "resubmitted": 0}],
            "landed": [],
            "started_at": time.time(),
        }
        hook = OpenAIBatchHook(conn_id=conn_id)
        summaries = [summarize_batch(hook.get_batch(b)) for b in source["batch_ids"]]
        return self._run(context, hook, state, summaries)

    def execute_complete(
        self, context: Context, event: WaitEvent | None = None, state: FetchState | None = None
    ) -> dict[str, Any]:
        """Resume after a wait; a fresh instance, so everything comes from ``state``.

        ``state`` travels in the resume kwargs, and in the XCom :data:`STATE_XCOM_KEY` pushed
        before deferring.
        """
        ti = context.get("ti")
        if not state and ti is not None:
            state = ti.xcom_pull(task_ids=ti.task_id, key=STATE_XCOM_KEY, map_indexes=ti.map_index)
        if not state:
            raise BatchProviderError(
                "The fetch resumed without its state (neither in the resume kwargs nor in XCom "
                f"{STATE_XCOM_KEY!r}); clear the task to fetch again."
            )
        summaries = _event_summaries(event, state["rounds"][-1]["batch_ids"])
        return self._run(context, OpenAIBatchHook(conn_id=state["conn_id"]), state, summaries)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """Input JSONL in; landed files, ``results.jsonl`` and ``manifest.json`` out; run facet."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        if self._manifest is None:
            return OperatorLineage()
        return fetch_lineage(self._manifest)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """After a failed reconciliation the landed files and the manifest are there: say so."""
        return self.get_openlineage_facets_on_complete(task_instance)

    # ---- the loop: land, join, maybe resubmit ------------------------------------------

    def _run(
        self, context: Context, hook: OpenAIBatchHook, state: FetchState, summaries: list[BatchSummary]
    ) -> dict[str, Any]:
        while True:
            current = state["rounds"][-1]
            current["batches"] = summaries
            if current["round"] == 0:  # ids-only input: the batches name their input files
                by_id = {s["id"]: s for s in summaries}
                for shard in state["source"]["shards"]:
                    shard["input_file_id"] = (
                        shard["input_file_id"] or by_id[shard["batch_id"]]["input_file_id"]
                    )
            if not all(BatchStatus.is_terminal(s["status"]) for s in summaries):
                self._defer(context, state, summaries)
            dest = self._destination(state)
            state["landed"].extend(self._land(hook, dest, current["round"], summaries, state["landed"]))
            with tempfile.TemporaryDirectory(prefix="openai-batch-fetch-") as tmp:
                results_path = os.path.join(tmp, fm.RESULTS_NAME)
                retry_path = os.path.join(tmp, "retry.jsonl")
                report, used_uri = self._join(hook, state, results_path, retry_path)
                if self._should_resubmit(state, report):
                    new_round = self._resubmit(context, hook, state, retry_path, report.retryable)
                    state["rounds"].append(new_round)
                    self._write_manifest(context, state, report, None, used_uri, status="in_progress")
                    summaries = new_round.pop("summaries")
                    continue
                results = None
                if self.write_results:
                    with open(results_path, "rb") as handle:
                        results = write_atomically(
                            landing_path(dest, fm.RESULTS_NAME), iter(lambda: handle.read(_CHUNK), b"")
                        )
            return self._finish(context, state, report, results.to_dict() if results else None, used_uri)

    def _defer(self, context: Context, state: FetchState, summaries: list[BatchSummary]) -> None:
        from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger

        # Also in XCom: ``dag.test()`` resumes with the trigger's event alone, not these kwargs.
        context["ti"].xcom_push(key=STATE_XCOM_KEY, value=state)

        ids = state["rounds"][-1]["batch_ids"]
        waiting = [f"{s['id']}={s['status']}" for s in summaries if not BatchStatus.is_terminal(s["status"])]
        self.log.info("Round %d: waiting for %s", state["rounds"][-1]["round"], ", ".join(waiting))
        deadline = deadline_from(
            [{"created_at": (s.get("timings") or {}).get("created_at")} for s in summaries],
            self.timeout,
            now=time.time(),
        )
        self.defer(
            trigger=OpenAIBatchTrigger(
                conn_id=state["conn_id"],
                batch_ids=list(ids),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                deadline=deadline,
            ),
            method_name="execute_complete",
            # Everything execute_complete needs travels here: ids, sizes and checksums only.
            kwargs={"state": state},
        )

    # ---- landing ------------------------------------------------------------------------

    def _destination_text(self) -> str:
        dest = self.destination
        if self.destination_conn_id and isinstance(dest, str) and "://" in dest:
            from airflow.sdk import ObjectStoragePath

            dest = ObjectStoragePath(dest, conn_id=self.destination_conn_id)
        return str(as_object_storage_path(dest)).rstrip("/")

    @staticmethod
    def _destination(state: Mapping[str, Any]) -> ObjectStoragePath:
        return as_object_storage_path(state["destination"])

    def _land(
        self,
        hook: OpenAIBatchHook,
        dest: ObjectStoragePath,
        round_no: int,
        summaries: Sequence[Mapping[str, Any]],
        landed_so_far: Sequence[Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Stream each result file to ``<dest>/<batch_id>/``; skip files landed before, intact."""
        known = {
            **fm.previous_checksums(_read_json(dest)),
            **fm.previous_checksums({"landed": landed_so_far}),
        }
        rows = []
        for summary in summaries:
            for kind, name, file_id in (
                ("output", fm.OUTPUT_NAME, summary.get("output_file_id")),
                ("errors", fm.ERRORS_NAME, summary.get("error_file_id")),
            ):
                if not file_id:
                    continue
                target = landing_path(dest, summary["id"], name)
                uri = public_uri(str(target)) or str(target)
                previous = known.get(uri)
                if previous is not None:
                    current = checksum_of(target)
                    if current is not None and (current.bytes, current.sha256) == previous:
                        self.log.info(
                            "Round %d: %s already landed intact (sha256 %s)", round_no, uri, previous[1]
                        )
                        rows.append(
                            fm.landed_entry(summary["id"], kind, file_id, current.to_dict(), skipped=True)
                        )
                        continue
                landed = hook.download_file(file_id, target)
                rows.append(fm.landed_entry(summary["id"], kind, file_id, landed.to_dict(), skipped=False))
        return rows

    # ---- join ---------------------------------------------------------------------------

    def _join(self, hook: OpenAIBatchHook, state: Mapping[str, Any], results_path: str, retry_path: str):
        dest = self._destination(state)
        landed = {(r["batch_id"], r["kind"]): r["uri"] for r in state["landed"]}
        batches = []
        for rnd in state["rounds"]:
            for summary in rnd["batches"]:
                out_uri, err_uri = (
                    landed.get((summary["id"], "output")),
                    landed.get((summary["id"], "errors")),
                )
                batches.append(
                    BatchResults.from_summary(
                        summary,
                        _read_lines(dest, out_uri) if out_uri else (),
                        _read_lines(dest, err_uri) if err_uri else (),
                        round=int(rnd["round"]),
                        # What a resubmission batch was sent decides who judges a missing line.
                        request_lines=hook.iter_file_lines(summary["input_file_id"])
                        if rnd["round"]
                        else None,
                    )
                )
        inputs, used_uri = self._inputs(hook, state)
        with open(results_path, "wb") as out, open(retry_path, "wb") as retry:
            report = join_results(inputs, batches, out, retry_out=retry)
        self.log.info(
            "Joined %d requests (round %d): %s; %d retryable",
            report.total,
            len(state["rounds"]) - 1,
            ", ".join(f"{k}={v}" for k, v in report.counts.items()),
            report.retryable,
        )
        return report, used_uri

    def _inputs(self, hook: OpenAIBatchHook, state: Mapping[str, Any]) -> tuple[list[InputShard], str | None]:
        """The input requests in shard order: from ``input_uri`` when readable, else the uploads."""
        shards = state["source"]["shards"]
        uri = state.get("input_uri")  # public: for logs and the manifest
        if uri:
            try:
                path = self._input_path(state)
                readable = path.exists()
            except Exception as err:
                self.log.warning(
                    "Input %s is not readable (%s); joining with the uploaded files",
                    uri,
                    public_text(str(err)),
                )
                readable = False
            if readable:
                return _split_input(path, shards), str(uri)
            self.log.warning("Input %s does not exist; joining with the uploaded input files", uri)
        inputs = []
        for shard in shards:
            inputs.append(InputShard(hook.iter_file_lines(shard["input_file_id"]), shard["batch_id"]))
        return inputs, None

    def _input_path(self, state: Mapping[str, Any]) -> ObjectStoragePath:
        """Where to read the input: the operator's own ``input_uri`` (rendered again after a
        resume, query and all), else the recorded one with its storage connection."""
        if self.input_uri:
            return as_object_storage_path(self.input_uri)
        uri, conn_id = state["input_uri"], state.get("input_conn_id")
        if conn_id and "://" in uri:
            from airflow.sdk import ObjectStoragePath

            return ObjectStoragePath(uri, conn_id=conn_id)
        return as_object_storage_path(uri)

    # ---- resubmission -------------------------------------------------------------------

    def _should_resubmit(self, state: Mapping[str, Any], report: Any) -> bool:
        done = len(state["rounds"]) - 1
        if not (self.resubmit and report.retryable):
            return False
        if done >= self.max_resubmits:
            self.log.warning(
                "%d request(s) are retryable but max_resubmits=%d rounds are used up", report.retryable, done
            )
            return False
        return True

    def _resubmit(
        self, context: Context, hook: OpenAIBatchHook, state: FetchState, retry_path: str, count: int
    ) -> FetchRound:
        """Send the retryable requests' original lines again, as new batch(es), idempotently.

        The identity includes the round, so a retry of this task re-attaches to the
        batches an earlier try created for the same round and the same requests.
        """
        round_no = len(state["rounds"])
        first = state["rounds"][0]["batches"]
        declared = state["source"].get("endpoint") or first[0].get("endpoint")
        path = Path(retry_path)
        # The original lines again: their url is the batch's endpoint as Azure OpenAI wants it
        # spelled (it compares strings); the canonical form goes into the fingerprint.
        prepared = prepare_input(
            path,
            endpoint=declared,
            limits=ShardLimits(),
            allow_unversioned_urls=hook.settings.azure,
            invalid=lambda report: (
                f"The requests to resubmit (round {round_no}) do not validate for connection "
                f"{state['conn_id']!r}, so nothing was resubmitted. Were they submitted through another "
                f"kind of connection (Azure OpenAI or not)?\n{report.format()}"
            ),
        )
        estimate = estimate_file(
            path,
            default_output_tokens=(state["source"].get("estimate") or {}).get("default_output_tokens"),
            prices=self.prices,
            shards=prepared.shards,
        )
        self.log.info("Round %d estimate: %s", round_no, estimate.summary())
        check_budget(estimate, parse_budget(self.max_cost_usd), what=f"resubmission round {round_no}")
        created = submit_shards(
            hook,
            path,
            prepared,
            task_identity(context["ti"], part=f"resubmit-{round_no}"),
            horizon=run_horizon(context),
            metadata={"airflow_round": str(round_no)},
            log=self.log,
        )
        summaries = [summarize_batch(b) for b in created]
        self.log.info(
            "Round %d: resubmitted %d request(s) as %s",
            round_no,
            count,
            ", ".join(s["id"] for s in summaries),
        )
        return {
            "round": round_no,
            "batch_ids": [s["id"] for s in summaries],
            "resubmitted": count,
            "fingerprint": prepared.fingerprint,
            "estimate": fm.round_estimate(estimate.to_dict()),
            "summaries": summaries,
        }

    # ---- finish -------------------------------------------------------------------------

    def _write_manifest(
        self,
        context: Context,
        state: FetchState,
        report: Any,
        results: Mapping[str, Any] | None,
        used_uri: str | None,
        *,
        status: str,
        error: str | None = None,
    ) -> FetchManifest:
        ti = context["ti"]
        model = state["source"].get("model") or next(
            (b.get("model") for r in state["rounds"] for b in r.get("batches") or () if b.get("model")), None
        )
        manifest = fm.build_fetch_manifest(
            source={**state["source"], "conn_id": state["conn_id"], "model": model},
            identity={**task_identity(ti).to_dict(), "try_number": getattr(ti, "try_number", None)},
            destination=state["destination"],
            rounds=state["rounds"],
            landed=state["landed"],
            report=report.to_dict() if report is not None else None,
            cost=report.estimate_cost(self.prices, model=model) if report is not None else None,
            results=results,
            input_uri=state.get("input_uri"),
            joined_from=None if report is None else ("input_uri" if used_uri else "uploaded_files"),
            started_at=state["started_at"],
            finished_at=time.time(),
            status=status,
            error=error,
        )
        body = json.dumps(manifest, indent=2, ensure_ascii=False, default=str).encode() + b"\n"
        write_atomically(landing_path(self._destination(state), fm.MANIFEST_NAME), [body])
        return manifest

    def _finish(
        self,
        context: Context,
        state: FetchState,
        report: Any,
        results: Mapping[str, Any] | None,
        used_uri: str | None,
    ) -> dict[str, Any]:
        try:
            report.check(min_success_ratio=self.min_success_ratio)
        except ReconciliationError as err:
            manifest = self._write_manifest(
                context, state, report, results, used_uri, status="failed", error=str(err)
            )
            self._manifest = manifest
            raise ReconciliationError(f"{err} Manifest: {manifest['manifest_uri']}") from None
        if report.total and not report.succeeded:
            self.log.warning(
                "None of the %d requests succeeded (see the errors in results.jsonl); set "
                "min_success_ratio to fail the task in that case.",
                report.total,
            )
        manifest = self._write_manifest(context, state, report, results, used_uri, status="complete")
        self._manifest = manifest
        persist_landed_manifest(context, manifest["manifest_uri"], self)
        named = emit_asset_events(context, self.outlets, asset_extra(manifest))
        if named:
            self.log.info(
                "Asset events for %s carry the counts and %s", ", ".join(named), manifest["manifest_uri"]
            )
        self.log.info(
            "Fetched %d batch(es) in %d round(s) to %s: %s; estimated cost %s",
            len(manifest["batch_ids"]),
            len(manifest["rounds"]),
            manifest["destination"],
            ", ".join(f"{k}={v}" for k, v in manifest["counts"].items()),
            format_usd((manifest.get("cost") or {}).get("usd")),
        )
        return fm.small_form(manifest)


# ---- helpers --------------------------------------------------------------------------------


def _event_summaries(event: Mapping[str, Any] | None, batch_ids: Sequence[str]) -> list[BatchSummary]:
    """Validate a trigger event; return its batch summaries. Unlike submit, failures are not fatal
    here: a failed or expired batch is accounted for request by request by the join."""
    if not isinstance(event, Mapping):
        raise BatchProviderError(
            f"The fetch resumed without a valid trigger event: {event!r:.200}; clear the task."
        )
    if event.get("status") == "error":
        exc_type = ERROR_REASONS.get(str(event.get("reason")), BatchProviderError)
        raise exc_type(
            f"Waiting for batches {list(batch_ids)} failed: {event.get('message') or 'no message'}"
        )
    batches = event.get("batches")
    if event.get("status") != "success" or not isinstance(batches, list):
        raise BatchProviderError(f"Unexpected trigger event: {event!r:.300}")
    got = sorted(str(b.get("id")) for b in batches if isinstance(b, Mapping))
    if got != sorted(batch_ids):
        raise BatchProviderError(
            f"Trigger event covers batches {got}, but the fetch waited for {list(batch_ids)}."
        )
    summaries = [cast(BatchSummary, dict(b)) for b in batches]  # checked below: terminal, ours
    for summary in summaries:
        if not BatchStatus.is_terminal(str(summary.get("status"))):
            raise BatchProviderError(
                f"Batch {summary.get('id')} is {summary.get('status')!r} after its wait ended."
            )
    order = {b: i for i, b in enumerate(batch_ids)}
    return sorted(summaries, key=lambda s: order[s["id"]])


def _input_conn_id(source: Mapping[str, Any]) -> str | None:
    """The storage connection of the submit manifest's input: its own field, or the user info
    of a URI recorded before that field existed (``s3://conn@bucket/key``)."""
    if source.get("input_conn_id") or not source.get("input_uri"):
        return source.get("input_conn_id")
    try:
        return conn_id_of(as_object_storage_path(source["input_uri"]))
    except Exception:  # unreadable as a path: the join falls back to the uploaded files
        return None


def _read_json(dest: ObjectStoragePath) -> dict[str, Any] | None:
    """The manifest an earlier run left at ``dest``, if any and readable."""
    try:
        path = landing_path(dest, fm.MANIFEST_NAME)
        if not path.exists():
            return None
        with path.open("rb") as handle:
            data = json.loads(handle.read())
        return data if isinstance(data, dict) else None
    except Exception:  # a broken old manifest only costs a re-download
        return None


def _read_lines(dest: ObjectStoragePath, uri: str) -> Iterator[bytes]:
    """Stream the lines of a landed file (opened lazily, on first ``next()``)."""
    path = as_object_storage_path(uri)
    conn_id = conn_id_of(dest)
    if path.protocol not in ("", "file", "local") and conn_id:
        # The public URI dropped the storage connection: take it from the destination.
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(uri, conn_id=conn_id)
    with path.open("rb") as handle:
        yield from iter_lines(handle)


def _split_input(path: ObjectStoragePath, shards: Sequence[Mapping[str, Any]]) -> list[InputShard]:
    """Cut one input file into its shards (by ``start_line``), read once, in order."""
    starts = [s.get("start_line") for s in shards]
    if len(shards) == 1 or any(s is None for s in starts):
        batch_id = shards[0]["batch_id"] if len(shards) == 1 else None
        return [InputShard(_file_lines(path), batch_id)]
    reader = _LineReader(_file_lines(path))
    bounds = [*(int(s) for s in starts[1:]), None]  # type: ignore[arg-type]
    return [
        InputShard(reader.until(end, shard.get("line_count"), shard), shard["batch_id"])
        for shard, end in zip(shards, bounds, strict=True)
    ]


def _file_lines(path: ObjectStoragePath) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter_lines(handle)


class _LineReader:
    """One pass over numbered lines, handed out shard by shard."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = enumerate(lines, 1)
        self._pending: tuple[int, bytes] | None = None

    def until(self, end: int | None, expected: int | None, shard: Mapping[str, Any]) -> Iterator[bytes]:
        count = 0
        while True:
            item = self._pending or next(self._lines, None)
            self._pending = None
            if item is None:
                break
            if end is not None and item[0] >= end:
                self._pending = item
                break
            if item[1].strip():
                count += 1
            yield item[1]
        if expected is not None and count != int(expected):
            raise BatchFileError(
                f"input_uri changed since the batches were submitted: shard {shard.get('index')} "
                f"(batch {shard.get('batch_id')}) has {count} request lines there, the submit manifest "
                f"says {expected}. Fetch without input_uri to join with the uploaded input files."
            )
