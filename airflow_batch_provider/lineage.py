"""OpenLineage facets and Asset events for the batch operators.

OpenLineage is optional: every import of it happens inside a function, so this
module imports without the openlineage provider installed. The facts come from
the submit manifest or the fetch manifest (plain dicts), built from an allow-list
of fields: a connection, a key or a credential has no way in. URIs go through
:func:`~airflow_batch_provider.storage.public_uri` before they leave (no
``user:password@``, no query or fragment, where a presigned URL keeps its signature).

Dataset naming follows ``ObjectStoragePath``: namespace ``path.namespace``
(``s3://bucket``, ``gs://bucket``, ``file``) and name ``path.key``, except that a
local file keeps its leading ``/`` (``file`` + ``/tmp/x.jsonl``), as the
OpenLineage naming spec and Airflow's own file Asset converter name it, so the
datasets join up with ``Asset("file:///tmp/x.jsonl")``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_batch_provider.results.manifest import round_estimate
from airflow_batch_provider.storage import public_uri

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

#: Key of the custom run facet in OpenLineage events.
RUN_FACET_NAME = "openaiBatch"

#: Keys of the fetch manifest copied into Asset event extras.
_EXTRA_KEYS = ("counts", "usage", "manifest_uri", "results_uri", "endpoint", "model", "rounds")


def dataset_ids(path: Any) -> tuple[str, str]:
    """Return ``(namespace, name)`` of a storage location.

    :param path: An ``ObjectStoragePath`` or a URI / local path string.
    """
    from airflow.sdk import ObjectStoragePath

    p = path if isinstance(path, ObjectStoragePath) else ObjectStoragePath(public_uri(str(path)) or str(path))
    protocol = p.protocol or "file"
    if protocol in ("file", "local"):
        return "file", "/" + p.key.lstrip("/")
    # Airflow < 3.2 keeps the connection id in the bucket (``aws_x@bucket``): never name it.
    bucket = (p.bucket or "").rpartition("@")[2]
    namespace = f"{protocol}://{bucket}" if bucket else protocol
    return namespace, p.key


def input_dataset(path: Any) -> Any:
    """OpenLineage input ``Dataset`` for a storage location."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    namespace, name = dataset_ids(path)
    return Dataset(namespace=namespace, name=name)


def output_dataset(path: Any, *, lines: int | None = None, size: int | None = None) -> Any:
    """OpenLineage ``OutputDataset`` with output statistics (rows = JSONL lines, size = bytes)."""
    from openlineage.client.generated.base import OutputDataset
    from openlineage.client.generated.output_statistics_output_dataset import (
        OutputStatisticsOutputDatasetFacet,
    )

    namespace, name = dataset_ids(path)
    facets: dict[str, Any] = {}
    if lines is not None or size is not None:
        facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=lines, size=size)
    return OutputDataset(namespace=namespace, name=name, outputFacets=facets)


@functools.cache
def _run_facet_class() -> type:
    # Defined on first use so that importing this module needs no OpenLineage.
    import attr
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attr.define
    class OpenAIBatchRunFacet(RunFacet):  # type: ignore[misc, valid-type]
        """What a batch run did: batches, endpoint, model, counts, tokens and estimated cost."""

        batchIds: list[str] = attr.field(factory=list)  # noqa: N815
        endpoint: str | None = None
        model: str | None = None
        counts: dict[str, int] = attr.field(factory=dict)
        usage: dict[str, int] = attr.field(factory=dict)
        estimatedCost: dict[str, Any] | None = None  # noqa: N815
        rounds: int = 1
        inputFingerprint: str | None = None  # noqa: N815
        manifestUri: str | None = None  # noqa: N815
        costEstimate: dict[str, Any] | None = None  # noqa: N815

        # Ids, counts and token numbers are not secrets: keep them readable.
        _additional_skip_redact = [
            "batchIds",
            "endpoint",
            "model",
            "counts",
            "usage",
            "estimatedCost",
            "rounds",
            "inputFingerprint",
            "manifestUri",
            "costEstimate",
        ]

        @staticmethod
        def _get_schema() -> str:
            return (
                "https://github.com/airflow-batch-provider/airflow-batch-provider/"
                "blob/main/docs/openlineage/OpenAIBatchRunFacet.json"
            )

    return OpenAIBatchRunFacet


def run_facet_fields(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The custom run facet's fields from a submit or fetch manifest (pure; allow-listed).

    Counts and usage come from the fetch manifest when present; for a submit
    manifest they are summed from its batch summaries, and the cost estimated
    from that usage.
    """
    batches = [b for b in manifest.get("batches") or () if isinstance(b, Mapping)]
    counts = manifest.get("counts")
    if not isinstance(counts, Mapping):
        counts = _summed_request_counts(batches) if batches else {}
    usage = manifest.get("usage")
    cost = manifest.get("cost")
    if not isinstance(usage, Mapping):
        usage, cost = _summed_usage_and_cost(batches, manifest.get("model"))
    rounds = manifest.get("rounds")
    return {
        "batchIds": [str(b) for b in manifest.get("batch_ids") or ()],
        "endpoint": manifest.get("endpoint"),
        "model": manifest.get("model"),
        "counts": {str(k): int(v) for k, v in counts.items() if isinstance(v, int)},
        "usage": {str(k): int(v) for k, v in (usage or {}).items() if isinstance(v, int)},
        "estimatedCost": _cost_fields(cost),
        "rounds": len(rounds) if isinstance(rounds, Sequence) and rounds else 1,
        "inputFingerprint": manifest.get("fingerprint"),
        "manifestUri": public_uri(manifest.get("manifest_uri")),
        "costEstimate": _estimate_fields(manifest.get("estimate")),
    }


def run_facet(manifest: Mapping[str, Any]) -> Any:
    """The ``openaiBatch`` OpenLineage run facet for a manifest."""
    return _run_facet_class()(**run_facet_fields(manifest))


def submit_lineage(manifest: Mapping[str, Any]) -> OperatorLineage:
    """Lineage for the submit operator: the input JSONL (when it came from storage) + run facet.

    Call it from ``OpenAIBatchSubmitOperator.get_openlineage_facets_on_complete``
    with the manifest the operator returned.

    :param manifest: The submit manifest (see the contracts: ``input_uri``, ``batch_ids``,
        ``endpoint``, ``model``, ``fingerprint``, ``batches``).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs = [input_dataset(manifest["input_uri"])] if manifest.get("input_uri") else []
    return OperatorLineage(inputs=inputs, outputs=[], run_facets={RUN_FACET_NAME: run_facet(manifest)})


def fetch_lineage(manifest: Mapping[str, Any]) -> OperatorLineage:
    """Lineage for the fetch operator: input JSONL in; landed files, results and manifest out.

    :param manifest: The fetch manifest (as written to ``manifest.json``).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    input_uri = (manifest.get("input") or {}).get("uri") or manifest.get("input_uri")
    inputs = [input_dataset(input_uri)] if input_uri else []
    outputs = [
        output_dataset(f["uri"], lines=f.get("lines"), size=f.get("bytes")) for f in _landed_outputs(manifest)
    ]
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={RUN_FACET_NAME: run_facet(manifest)})


def asset_extra(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The extra carried by Asset events after a fetch: counts, usage, cost and where the manifest is."""
    extra = {k: manifest[k] for k in _EXTRA_KEYS if manifest.get(k) is not None}
    if isinstance(extra.get("rounds"), Sequence):
        extra["rounds"] = len(extra["rounds"])
    for key in ("manifest_uri", "results_uri"):
        if key in extra:
            extra[key] = public_uri(extra[key])
    cost = manifest.get("cost")
    if isinstance(cost, Mapping):
        extra["cost_usd"] = cost.get("usd")
    extra["batch_ids"] = [str(b) for b in manifest.get("batch_ids") or ()]
    return extra


def emit_asset_events(
    context: Mapping[str, Any], outlets: Iterable[Any], extra: Mapping[str, Any]
) -> list[str]:
    """Attach ``extra`` to the asset event of every ``Asset`` among ``outlets``.

    Airflow records one event per outlet Asset when the task succeeds; DAGs with
    ``schedule=[asset]`` then run. Aliases and other outlets are left alone.

    :return: The names of the assets whose event got the extra.
    """
    from airflow.sdk import Asset

    events = context.get("outlet_events")
    if events is None:
        return []
    named = []
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            accessor = events[outlet]
            accessor.extra = {**dict(accessor.extra or {}), **dict(extra)}
            named.append(outlet.name)
    return named


def _landed_outputs(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    files = [f for f in manifest.get("landed") or () if isinstance(f, Mapping) and f.get("uri")]
    for key in ("results", "manifest"):
        entry = manifest.get(key)
        if isinstance(entry, Mapping) and entry.get("uri"):
            files.append(entry)
    if not any(f.get("uri") == manifest.get("manifest_uri") for f in files) and manifest.get("manifest_uri"):
        files.append({"uri": manifest["manifest_uri"]})
    return files


def _summed_request_counts(batches: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out = {"total": 0, "completed": 0, "failed": 0}
    for b in batches:
        for k, v in (b.get("request_counts") or {}).items():
            if k in out:
                out[k] += int(v or 0)
    return out


def _summed_usage_and_cost(
    batches: Sequence[Mapping[str, Any]], model: Any
) -> tuple[dict[str, int], dict[str, Any] | None]:
    from airflow_batch_provider.pricing import Usage, estimate_cost

    total = Usage()
    for b in batches:
        if b.get("usage"):
            total.add(Usage.from_usage(b["usage"]))
    if not total.responses:
        return {}, None
    usage = total.to_dict()
    usage.pop("responses", None)
    return usage, estimate_cost(model, total)


def _cost_fields(cost: Any) -> dict[str, Any] | None:
    """``usd`` plus, per model, what price matched (from ``estimate_cost`` or the join's estimate)."""
    if not isinstance(cost, Mapping):
        return None
    out = {k: cost.get(k) for k in ("usd", "matched", "basis", "source", "as_of", "note") if k in cost}
    by_model = cost.get("by_model")
    if isinstance(by_model, Mapping):
        out["byModel"] = {
            str(model): {k: est.get(k) for k in ("usd", "matched", "source", "as_of")}
            for model, est in by_model.items()
            if isinstance(est, Mapping)
        }
    return out


def _estimate_fields(estimate: Any) -> dict[str, Any] | None:
    """The pre-submit estimate (submit manifest), or it beside the actual usage (fetch manifest)."""
    if not isinstance(estimate, Mapping):
        return None
    if isinstance(estimate.get("estimated"), Mapping):  # the fetch manifest's comparison
        out = {"estimated": _estimate_fields(estimate["estimated"])}
        actual = estimate.get("actual")
        if isinstance(actual, Mapping):
            out["actual"] = {k: actual.get(k) for k in ("input_tokens", "output_tokens", "cost_usd")}
        for key in ("input_tokens_ratio", "output_tokens_share_of_bound", "cost_within_range"):
            out[key] = estimate.get(key)
        return out
    return round_estimate(estimate)
