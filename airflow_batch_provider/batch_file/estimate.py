"""Know the price before paying it: token counts and a cost range for a batch input.

Pure: no Airflow, no HTTP. Streams request lines once (memory flat with file size) and
returns an :class:`Estimate`:

- **input tokens**, counted exactly with OpenAI's ``tiktoken``: ``o200k_base`` for the
  gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and o-series families, ``cl100k_base`` for older chat
  models and the embedding models (:func:`encoding_name`). Chat messages cost what
  OpenAI's cookbook ("How to count tokens with tiktoken") counts: 3 tokens per message,
  1 more with a ``name``, 3 to prime the reply. Responses requests count ``instructions``
  and each input message the same way; embeddings and completions count their inputs
  alone (a list of token ids counts its length). Tool definitions and non-string message
  fields count as their JSON text (close, not exact); images, audio and files are not
  counted (the estimate says how many requests hold them).
- **output-token bound**: the request's ``max_completion_tokens`` / ``max_tokens`` /
  ``max_output_tokens`` (times ``n``), else ``default_output_tokens`` when declared, else
  the model's maximum output (:data:`MODEL_MAX_OUTPUT`): a true upper bound, often a
  loose one. Embeddings and moderations produce none.
- **images and video**: image requests count ``n`` images (GPT image models: also their
  prompt tokens and an output bound of ``n`` images at the request's quality, largest
  size); video requests count ``seconds`` (default 4). Per-image and per-second models
  (dall-e, sora) are priced from the default to the dearest size (low to high).
- **cost**: ``cost_low_usd`` prices the input alone, ``cost_high_usd`` adds the output
  bound; both at the Batch API rate of :mod:`airflow_batch_provider.pricing` (its
  built-in table, or ``prices`` overrides). Cached-input discounts can make the bill lower.

Without the encoding files (``tiktoken`` downloads them on first use; a machine without
internet cannot) the counts fall back to :data:`APPROXIMATION`, one token per 4 UTF-8
bytes, and the estimate says so (``exact: false``); the budget guard still works on it.
Point ``TIKTOKEN_CACHE_DIR`` at a directory holding the files to stay exact offline.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_batch_provider.batch_file.bodies import DEFAULT_MODELS
from airflow_batch_provider.batch_file.lines import UNVERSIONED_ENDPOINTS, iter_lines
from airflow_batch_provider.exceptions import BudgetExceededError
from airflow_batch_provider.pricing import (
    BATCH_DISCOUNT,
    MEDIA_PRICES_AS_OF,
    PRICES_AS_OF,
    ModelPrice,
    match_price,
)

log = logging.getLogger(__name__)

#: Name of the fallback counting rule when no tiktoken encoding is available.
APPROXIMATION = "approximation: 1 token per 4 UTF-8 bytes"

#: Model families tokenized with ``o200k_base`` (prefixes); every other known model uses
#: ``cl100k_base``. A model unknown to both lists is counted with ``o200k_base`` (noted).
O200K_FAMILIES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "omni-moderation")
CL100K_FAMILIES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding", "davinci", "babbage", "text-moderation")

#: Most output tokens one response of a model can hold: the output bound of a request that
#: sets none (longest matching prefix; :data:`DEFAULT_MAX_OUTPUT` for other models).
MODEL_MAX_OUTPUT: dict[str, int] = {
    "gpt-4o": 16_384,
    "chatgpt-4o": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.5": 16_384,
    "gpt-5": 128_000,
    "o1": 100_000,
    "o1-mini": 65_536,
    "o3": 100_000,
    "o4-mini": 100_000,
    "gpt-4": 8_192,
    "gpt-4-turbo": 4_096,
    "gpt-3.5-turbo": 4_096,
    "davinci-002": 16_384,
    "babbage-002": 16_384,
}
DEFAULT_MAX_OUTPUT = 16_384
#: The completions endpoint's own default ``max_tokens``.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

_NO_OUTPUT = frozenset({"/v1/embeddings", "/v1/moderations"})
_NOT_TOKENS = frozenset({"/v1/images/generations", "/v1/images/edits", "/v1/videos"})
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
# Counting cache: repeated strings (a shared system prompt) are counted once. Bounded, so
# memory stays flat: cleared when full; long strings are not kept.
_CACHE_ENTRIES = 2048
_CACHE_MAX_CHARS = 8192
_TOP = 5


def _family(model: str, families: Sequence[str]) -> str | None:
    best = None
    for prefix in families:
        if model.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def encoding_name(model: str | None) -> tuple[str, bool]:
    """The tiktoken encoding of ``model``: ``(name, known)``; ``known`` is False for a guess.

    Fine-tuned models (``ft:gpt-4o-mini:org::id``) use their base model's encoding.
    """
    name = (model or "").removeprefix("ft:")
    o200k, cl100k = _family(name, O200K_FAMILIES), _family(name, CL100K_FAMILIES)
    if o200k and (not cl100k or len(o200k) >= len(cl100k)):
        return "o200k_base", True
    if cl100k:
        return "cl100k_base", True
    return "o200k_base", False


def model_max_output(model: str | None) -> int:
    """The output bound of a request of ``model`` that sets no maximum."""
    name = (model or "").removeprefix("ft:")
    best = max((k for k in MODEL_MAX_OUTPUT if name == k or name.startswith(k + "-")), key=len, default=None)
    return MODEL_MAX_OUTPUT[best] if best else DEFAULT_MAX_OUTPUT


_ENCODINGS: dict[str, Any] = {}
_UNAVAILABLE: dict[str, str] = {}


def load_encoding(name: str) -> Any | None:
    """The tiktoken ``Encoding`` called ``name``, or ``None`` (logged once) when unavailable.

    A failure is remembered for the process: a worker without internet tries once.
    """
    if name in _ENCODINGS:
        return _ENCODINGS[name]
    if name in _UNAVAILABLE:
        return None
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(name)
    except Exception as err:  # ImportError, no network, a corrupt cache
        _UNAVAILABLE[name] = f"{type(err).__name__}: {err}"[:300]
        log.warning(
            "tiktoken encoding %s is unavailable (%s): token counts fall back to the %s. Install "
            "tiktoken and let it download its files once, or set TIKTOKEN_CACHE_DIR to a directory "
            "holding them.",
            name,
            _UNAVAILABLE[name],
            APPROXIMATION,
        )
        return None
    _ENCODINGS[name] = encoding
    return encoding


def _approx(text: str) -> int:
    return -(-len(text.encode("utf-8", "surrogatepass")) // 4)


class TokenCounter:
    """Counts the tokens of strings with one encoding (or the approximation), caching repeats."""

    def __init__(self, encoding_name: str, *, use_tiktoken: bool = True) -> None:
        encoding = load_encoding(encoding_name) if use_tiktoken else None
        self.exact = encoding is not None
        self.tokenizer = encoding_name if self.exact else APPROXIMATION
        self._encode: Callable[[str], Any] | None = encoding.encode_ordinary if encoding else None
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        cache = self._cache
        count = cache.get(text)
        if count is not None:
            return count
        count = len(self._encode(text)) if self._encode is not None else _approx(text)
        if len(text) <= _CACHE_MAX_CHARS:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[text] = count
        return count

    def json(self, value: Any) -> int:
        """Tokens of a non-string value written as compact JSON."""
        if value is None:
            return 0
        return self(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


# ---- per request ---------------------------------------------------------------------------


def _parts(value: Any, count: TokenCounter, media: list[int]) -> int:
    """A message ``content``: a string, or a list of parts whose text is counted."""
    if isinstance(value, str):
        return count(value)
    if value is None:
        return 0
    if isinstance(value, list):
        total = 0
        for part in value:
            if isinstance(part, str):
                total += count(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str) and part.get("type", "text") in _TEXT_PART_TYPES:
                    total += count(text)
                else:
                    media[0] += 1
        return total
    return count.json(value)


def _messages(messages: Any, count: TokenCounter, media: list[int]) -> int:
    """Chat messages as the cookbook counts them: 3 per message, +1 per name, 3 to prime the reply."""
    total = 3
    if not isinstance(messages, list):
        return total
    for message in messages:
        total += 3
        if not isinstance(message, Mapping):
            total += count.json(message)
            continue
        for key, value in message.items():
            if key == "content":
                total += _parts(value, count, media)
            elif isinstance(value, str):
                total += count(value)
                if key == "name":
                    total += 1
            else:
                total += count.json(value)
    return total


def _responses_input(body: Mapping[str, Any], count: TokenCounter, media: list[int]) -> int:
    total = 3  # the reply's priming
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += 3 + count("developer") + count(instructions)
    value = body.get("input")
    if isinstance(value, str):
        return total + 3 + count("user") + count(value)
    for item in value if isinstance(value, list) else ():
        if isinstance(item, Mapping) and "content" in item and item.get("type", "message") == "message":
            total += 3 + count(str(item.get("role") or "user")) + _parts(item.get("content"), count, media)
        else:
            total += count.json(item)
    return total


def _flat_inputs(value: Any, count: TokenCounter, media: list[int]) -> int:
    """Embeddings, completions, moderations input: strings, token ids, or lists of them."""
    if isinstance(value, str):
        return count(value)
    if not isinstance(value, list):
        return 0 if value is None else count.json(value)
    if value and type(value[0]) is int:
        return len(value)  # already token ids
    total = 0
    for item in value:
        if isinstance(item, str):
            total += count(item)
        elif isinstance(item, list):
            total += len(item)
        elif isinstance(item, Mapping):  # multimodal moderation parts
            total += _parts([item], count, media)
    return total


def input_tokens(endpoint: str, body: Mapping[str, Any], count: TokenCounter) -> tuple[int, bool]:
    """Input tokens of one request body: ``(tokens, holds_uncounted_media)``.

    :param endpoint: The canonical endpoint (``/v1/chat/completions``).
    """
    media = [0]
    if endpoint == "/v1/chat/completions":
        tokens = _messages(body.get("messages"), count, media)
        for key in ("tools", "functions"):
            if body.get(key):
                tokens += count.json(body[key])
    elif endpoint == "/v1/responses":
        tokens = _responses_input(body, count, media)
        if body.get("tools"):
            tokens += count.json(body["tools"])
    elif endpoint == "/v1/completions":
        tokens = _flat_inputs(body.get("prompt"), count, media)
    elif endpoint in ("/v1/images/generations", "/v1/images/edits"):  # the prompt; input images uncounted
        prompt = body.get("prompt")
        tokens = count(prompt) if isinstance(prompt, str) else 0
        media[0] = 1 if body.get("images") else 0
    elif endpoint in _NOT_TOKENS:
        tokens = 0
    else:  # embeddings, moderations
        tokens = _flat_inputs(body.get("input"), count, media)
    return tokens, bool(media[0])


def _positive_int(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


#: Output tokens of one GPT image by quality at the largest size (1536x1024), the bound
#: when a request does not say; ``auto`` and unset quality count as ``high``.
IMAGE_OUTPUT_TOKENS_MAX = {"low": 408, "medium": 1584, "high": 6240}


def image_output_bound(body: Mapping[str, Any]) -> int:
    """Most output tokens one GPT image of this request can be billed."""
    return IMAGE_OUTPUT_TOKENS_MAX.get(str(body.get("quality")), IMAGE_OUTPUT_TOKENS_MAX["high"])


def media_units(endpoint: str, body: Mapping[str, Any]) -> tuple[int, int]:
    """``(images, video seconds)`` one request asks for (``n`` images; ``seconds``, default 4)."""
    if endpoint in ("/v1/images/generations", "/v1/images/edits"):
        return _positive_int(body.get("n")) or 1, 0
    if endpoint == "/v1/videos":
        seconds = body.get("seconds")
        return 0, int(seconds) if type(seconds) is str and seconds.isdigit() else 4
    return 0, 0


def plural_units(images: int, seconds: int) -> str:
    parts = [f"{images:,} image(s)"] if images else []
    return " and ".join(parts + ([f"{seconds:,} second(s) of video"] if seconds else []))


def output_bound(
    endpoint: str, body: Mapping[str, Any], model: str | None, default_output_tokens: int | None
) -> tuple[int, str]:
    """Most output tokens one request can be billed: ``(tokens, source)``.

    ``source`` is ``request`` (its own maximum), ``default_output_tokens``, ``model_max`` or
    ``none`` (an endpoint without output).
    """
    if endpoint in _NO_OUTPUT or endpoint in _NOT_TOKENS:
        return 0, "none"
    if endpoint == "/v1/responses":
        own = _positive_int(body.get("max_output_tokens"))
    else:
        own = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
        if own is None and endpoint == "/v1/completions":
            own = COMPLETIONS_DEFAULT_MAX_TOKENS
    choices = _positive_int(body.get("n")) or 1
    if endpoint == "/v1/completions":
        choices = max(choices, _positive_int(body.get("best_of")) or 1)
    if own is not None:
        return own * choices, "request"
    if default_output_tokens is not None:
        return default_output_tokens * choices, "default_output_tokens"
    return model_max_output(model) * choices, "model_max"


# ---- the estimate --------------------------------------------------------------------------


@dataclass
class _Tally:
    requests: int = 0
    input_tokens: int = 0
    output_tokens_bound: int = 0
    images: int = 0  # images requested (``n``) of the image endpoints
    video_seconds: int = 0  # seconds of video requested

    def add(self, inp: int, out: int, images: int = 0, seconds: int = 0) -> None:
        self.requests += 1
        self.input_tokens += inp
        self.output_tokens_bound += out
        self.images += images
        self.video_seconds += seconds


def _usd(tokens: int, per_1m: float) -> float:
    return tokens * per_1m / 1_000_000


def _r(value: float) -> float:
    return round(value, 6)


@dataclass
class Estimate:
    """Token counts and cost range of a batch input; :meth:`to_dict` is the manifest's ``estimate``."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens_bound: int = 0
    images: int = 0
    video_seconds: int = 0
    skipped_lines: int = 0
    media_requests: int = 0
    output_bound_from: dict[str, int] = field(default_factory=dict)
    default_output_tokens: int | None = None
    models: dict[str, _Tally] = field(default_factory=dict)
    shards: list[_Tally] = field(default_factory=list)
    largest: list[tuple[float, int, str, int, int]] = field(default_factory=list)  # heap
    tokenizers: dict[str, str] = field(default_factory=dict)  # model -> tokenizer used
    unknown_tokenizer_models: list[str] = field(default_factory=list)
    prices: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None
    endpoint: str | None = None

    @property
    def exact(self) -> bool:
        return all(t != APPROXIMATION for t in self.tokenizers.values())

    def _price(self, model: str) -> tuple[str, ModelPrice, str] | None:
        return match_price(model, self.prices)

    def _cost(self, model: str, tally: _Tally) -> tuple[float | None, float | None]:
        found = self._price(model)
        if found is None:
            return None, None
        price = found[1]
        low = _usd(tally.input_tokens, price.input)
        high = low + _usd(tally.output_tokens_bound, price.output)
        low += tally.images * (price.per_image or 0.0) + tally.video_seconds * (price.per_second or 0.0)
        high += tally.images * (price.per_image_max or price.per_image or 0.0)
        high += tally.video_seconds * (price.per_second_max or price.per_second or 0.0)
        return low, high

    @property
    def cost_range(self) -> tuple[float | None, float | None]:
        """``(low, high)`` in USD; ``None`` when a model has no known price."""
        low = high = 0.0
        for model, tally in self.models.items():
            lo, hi = self._cost(model, tally)
            if lo is None or hi is None:
                return None, None
            low, high = low + lo, high + hi
        return low, high

    def unpriced_models(self) -> list[str]:
        return [m for m in self.models if self._price(m) is None]

    def by_model(self) -> list[dict[str, Any]]:
        rows = []
        for model, tally in self.models.items():
            low, high = self._cost(model, tally)
            rows.append(
                {
                    "model": model,
                    "requests": tally.requests,
                    "input_tokens": tally.input_tokens,
                    "output_tokens_bound": tally.output_tokens_bound,
                    "cost_low_usd": None if low is None else _r(low),
                    "cost_high_usd": None if high is None else _r(high),
                    "tokenizer": self.tokenizers.get(model),
                    **{
                        k: v
                        for k, v in (("images", tally.images), ("video_seconds", tally.video_seconds))
                        if v
                    },
                }
            )
        return sorted(rows, key=lambda r: (-(r["cost_high_usd"] or 0), -r["input_tokens"]))

    def to_dict(self) -> dict[str, Any]:
        low, high = self.cost_range
        single = next(iter(self.models)) if len(self.models) == 1 else None
        prices: dict[str, Any] = {}
        for model in self.models:
            found = self._price(model)
            if found is not None:
                prices[model] = {"matched": found[0], "per_1m": found[1].to_dict(), "source": found[2]}
        sources = sorted({p["source"] for p in prices.values()})
        tokenizers = sorted(set(self.tokenizers.values()))
        notes = []
        if not self.exact:
            notes.append(
                f"token counts are an {APPROXIMATION}: tiktoken's encoding files were unavailable "
                "(set TIKTOKEN_CACHE_DIR to a directory holding them)"
            )
        for model in self.unknown_tokenizer_models:
            notes.append(f"model {model!r} is not in the tokenizer table: counted with o200k_base")
        for model in self.unpriced_models():
            notes.append(
                f"no price known for model {model!r}: cost not estimated; pass prices="
                "{'<model prefix>': {'input': .., 'cached_input': .., 'output': ..}} (USD per 1M, batch rate)"
            )
        if self.media_requests:
            notes.append(
                f"{self.media_requests} request(s) hold images, audio or files: those are not counted"
            )
        if self.output_bound_from.get("model_max"):
            notes.append(
                f"{self.output_bound_from['model_max']} request(s) set no output maximum: bounded by the "
                "model's maximum output; set max_tokens / max_completion_tokens / max_output_tokens or "
                "default_output_tokens for a tighter bound"
            )
        if self.skipped_lines:
            notes.append(
                f"{self.skipped_lines} line(s) are not request lines and were skipped: validate the file"
            )
        if self.images or self.video_seconds:
            notes.append(
                f"{plural_units(self.images, self.video_seconds)} requested: priced per image or per second "
                f"of video (built-in prices as of {MEDIA_PRICES_AS_OF}), from the default to the dearest "
                "size and quality"
            )
        units = {"images": self.images, "video_seconds": self.video_seconds}
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens_bound": self.output_tokens_bound,
            **{k: v for k, v in units.items() if v},
            "cost_low_usd": None if low is None else _r(low),
            "cost_high_usd": None if high is None else _r(high),
            "exact": self.exact,
            "tokenizer": tokenizers[0] if len(tokenizers) == 1 else (tokenizers or None),
            "model": single,
            "endpoint": self.endpoint,
            "prices": prices,
            "price_source": sources[0] if len(sources) == 1 else (sources or None),
            "prices_as_of": PRICES_AS_OF,
            "basis": f"batch ({int(BATCH_DISCOUNT * 100)}% of the standard price)",
            "output_bound_from": dict(self.output_bound_from),
            "default_output_tokens": self.default_output_tokens,
            "by_model": self.by_model(),
            "shards": [
                {"index": i, **self._shard_dict(single, tally)} for i, tally in enumerate(self.shards)
            ],
            "largest_requests": [
                {"line": line, "custom_id": cid, "input_tokens": inp, "output_tokens_bound": out}
                for _, line, cid, inp, out in sorted(self.largest, reverse=True)
            ],
            "notes": notes,
        }

    def _shard_dict(self, model: str | None, tally: _Tally) -> dict[str, Any]:
        low, high = self._cost(model, tally) if model else (None, None)
        return {
            "requests": tally.requests,
            "input_tokens": tally.input_tokens,
            "output_tokens_bound": tally.output_tokens_bound,
            "cost_low_usd": None if low is None else _r(low),
            "cost_high_usd": None if high is None else _r(high),
        }

    def summary(self) -> str:
        """One line for a task log or the command line."""
        low, high = self.cost_range
        cost = (
            "cost unknown (unpriced model)" if low is None else f"{format_usd(low)} to {format_usd(high)} USD"
        )
        tokenizers = ", ".join(sorted(set(self.tokenizers.values()))) or "none"
        return (
            f"{self.requests:,} requests, {self.input_tokens:,} input tokens ({tokenizers}), "
            f"output bound {self.output_tokens_bound:,} tokens: {cost} at the batch rate"
        )


def format_usd(value: float | None) -> str:
    """An amount for a message: cents above 1 USD, more digits below (``?`` when unknown)."""
    if value is None:
        return "?"
    return f"{value:,.2f}" if value >= 1 else f"{value:.4f}" if value >= 0.01 else f"{value:.6f}"


def _canonical(url: Any, fallback: str | None) -> str | None:
    if type(url) is not str:
        return fallback
    return UNVERSIONED_ENDPOINTS.get(url, url)


def estimate_lines(
    lines: Iterable[bytes],
    *,
    endpoint: str | None = None,
    model: str | None = None,
    default_output_tokens: int | None = None,
    prices: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
    shards: Sequence[Any] | None = None,
    use_tiktoken: bool = True,
) -> Estimate:
    """Estimate a stream of request lines (as :func:`~airflow_batch_provider.batch_file.iter_lines`
    yields them); lines that are not request objects are skipped and counted.

    :param endpoint: Endpoint to assume for lines without a ``url`` (normally each line has one).
    :param model: Count and price every request as this model instead of its own (what-if).
    :param default_output_tokens: Output bound of a request that sets no maximum (default:
        the model's maximum output).
    :param prices: Price overrides, as for :func:`airflow_batch_provider.pricing.estimate_cost`.
    :param shards: ``ShardInfo`` (or dicts with ``start_line``) of the stream, for per-shard figures.
    :param use_tiktoken: False forces the approximation (tests, or to skip the tokenizer).
    """
    if default_output_tokens is not None and (
        type(default_output_tokens) is not int or default_output_tokens < 0
    ):
        raise ValueError(
            f"default_output_tokens must be a non-negative integer, got {default_output_tokens!r}"
        )
    result = Estimate(prices=prices, default_output_tokens=default_output_tokens)
    starts = [int(_get(s, "start_line")) for s in shards or ()]
    result.shards = [_Tally() for _ in starts]
    counters: dict[str, TokenCounter] = {}
    by_model: dict[str, tuple[TokenCounter, float, float]] = {}  # model -> counter, $/token in, out
    bound_from = result.output_bound_from
    heap = result.largest
    decode = json.JSONDecoder().decode
    for line_no, raw in enumerate(lines, 1):
        if not raw or raw.isspace():
            continue
        try:
            obj = decode(raw.decode())
            body = obj["body"]
            request_endpoint = _canonical(obj.get("url"), endpoint) or "/v1/chat/completions"
            name = model or body.get("model") or DEFAULT_MODELS.get(request_endpoint) or body["model"]
            if type(name) is not str:
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            result.skipped_lines += 1
            continue
        if result.endpoint is None:
            result.endpoint = request_endpoint
        entry = by_model.get(name)
        if entry is None:
            enc, known = encoding_name(name)
            if request_endpoint == "/v1/embeddings" and not known:
                enc = "cl100k_base"
            counter = counters.get(enc) or counters.setdefault(
                enc, TokenCounter(enc, use_tiktoken=use_tiktoken)
            )
            result.tokenizers[name] = counter.tokenizer
            if not known and request_endpoint != "/v1/embeddings":
                result.unknown_tokenizer_models.append(name)
            found = match_price(name, prices)
            per_in, per_out = (found[1].input / 1e6, found[1].output / 1e6) if found else (1.0, 1.0)
            entry = by_model[name] = (counter, per_in, per_out)
            result.models[name] = _Tally()
        counter, per_in, per_out = entry
        inp, media = input_tokens(request_endpoint, body, counter)
        out, source = output_bound(request_endpoint, body, name, default_output_tokens)
        images, seconds = media_units(request_endpoint, body)
        if images and name.startswith(("gpt-image", "chatgpt-image")):
            out, source = images * image_output_bound(body), "image_quality"
        result.images += images
        result.video_seconds += seconds
        result.requests += 1
        result.input_tokens += inp
        result.output_tokens_bound += out
        result.media_requests += media
        bound_from[source] = bound_from.get(source, 0) + 1
        result.models[name].add(inp, out, images, seconds)
        if starts:
            result.shards[max(bisect_right(starts, line_no) - 1, 0)].add(inp, out, images, seconds)
        weight = inp * per_in + out * per_out
        if len(heap) < _TOP:
            heapq.heappush(heap, (weight, line_no, str(obj.get("custom_id")), inp, out))
        elif weight > heap[0][0]:
            heapq.heapreplace(heap, (weight, line_no, str(obj.get("custom_id")), inp, out))
    return result


def estimate_file(path: Any, *, chunk_size: int = 1 << 20, **kwargs: Any) -> Estimate:
    """Estimate a file by streaming it; see :func:`estimate_lines`.

    :param path: A local path or anything with ``.open("rb")`` (``ObjectStoragePath``).
    """
    handle: IO[bytes] = path.open("rb") if hasattr(path, "open") else open(os.fspath(path), "rb")
    with handle:
        return estimate_lines(iter_lines(handle, chunk_size), **kwargs)


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


# ---- the budget guard ----------------------------------------------------------------------


def parse_budget(value: Any, *, parameter: str = "max_cost_usd") -> float | None:
    """``max_cost_usd`` as rendered (a number or a numeric string) -> float, or ``None``.

    :raises ValueError: it is not a non-negative number.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        budget = float(value)
    except (TypeError, ValueError):
        budget = -1.0
    if not budget >= 0 or budget == float("inf"):
        raise ValueError(f"{parameter} must be a non-negative number of USD or None, got {value!r}")
    return budget


def check_budget(estimate: Estimate, budget: float | None, *, what: str = "the batch") -> None:
    """Fail when the estimate's upper bound exceeds ``budget`` (``None``: no guard).

    :raises BudgetExceededError: with the estimate, the budget and the largest contributors;
        also when a model has no known price (the bound cannot be checked).
    """
    if budget is None:
        return
    low, high = estimate.cost_range
    if high is not None and high <= budget:
        return
    data = estimate.to_dict()
    rows = [
        f"  model {r['model']}: {r['requests']:,} requests, {r['input_tokens']:,} input tokens, output bound "
        f"{r['output_tokens_bound']:,} tokens, up to {format_usd(r['cost_high_usd'])} USD"
        for r in data["by_model"][:_TOP]
    ]
    shards = sorted(data["shards"], key=lambda s: -(s["cost_high_usd"] or 0))
    if len(shards) > 1:
        rows += [
            f"  shard {s['index']}: {s['requests']:,} requests, {s['input_tokens']:,} input tokens, output "
            f"bound {s['output_tokens_bound']:,}, up to {format_usd(s['cost_high_usd'])} USD"
            for s in shards[:3]
        ]
    rows += [
        f"  line {r['line']} (custom_id {r['custom_id']!r}): {r['input_tokens']:,} input tokens, "
        f"output bound {r['output_tokens_bound']:,}"
        for r in data["largest_requests"][:3]
    ]
    sources = ", ".join(f"{k}={v:,}" for k, v in sorted(estimate.output_bound_from.items()))
    tokenizer = "exact (tiktoken)" if estimate.exact else APPROXIMATION
    if high is None:
        head = (
            f"{what} cannot be checked against max_cost_usd={budget:g} USD: no price is known for "
            f"{', '.join(map(repr, estimate.unpriced_models()))}, so nothing was uploaded. Pass "
            "prices={'<model prefix>': {'input': .., 'output': ..}} (USD per 1M tokens, batch rate), or "
            "max_cost_usd=None to submit without a guard."
        )
    else:
        head = (
            f"The estimated cost of {what} is {format_usd(low)} to {format_usd(high)} USD at the batch rate; "
            f"its upper bound exceeds max_cost_usd={budget:g} USD, so nothing was uploaded. Estimate: "
            f"{estimate.requests:,} requests, {estimate.input_tokens:,} input tokens ({tokenizer}), output "
            f"bound {estimate.output_tokens_bound:,} tokens (bound from: {sources})."
        )
    fix = (
        "Fix: set max_tokens / max_completion_tokens / max_output_tokens on the requests (or "
        "default_output_tokens) for a tighter output bound, reduce the input, or raise max_cost_usd."
    )
    raise BudgetExceededError(
        "\n".join([head, "Largest contributors:", *rows, fix]), estimate=data, budget=budget
    )
