"""Token usage and estimated Batch API cost.

Pure: no Airflow, no HTTP. Two parts:

* :class:`Usage` adds up token counts from any OpenAI response body, whatever
  its endpoint's usage shape:

  - ``/v1/responses``: ``input_tokens``, ``input_tokens_details.cached_tokens``,
    ``output_tokens``, ``output_tokens_details.reasoning_tokens``, ``total_tokens``
    (the batch object's own ``usage`` has this shape too);
  - ``/v1/chat/completions`` and ``/v1/completions``: ``prompt_tokens``,
    ``prompt_tokens_details.cached_tokens``, ``completion_tokens``,
    ``completion_tokens_details.reasoning_tokens``, ``total_tokens``;
  - ``/v1/embeddings``: ``prompt_tokens``, ``total_tokens``;
  - ``/v1/moderations``: no usage (counts as zero);
  - ``/v1/images/generations`` and ``/v1/images/edits``: ``images`` (``data`` items) and, for
    the GPT image models, ``input_tokens`` (``input_tokens_details.image_tokens``: the image
    part, :attr:`Usage.image_input_tokens`) and ``output_tokens``;
  - ``/v1/videos``: ``video_seconds`` (the ``Video``'s ``seconds``).

* :func:`estimate_cost` prices a :class:`Usage` for a model::

      estimate_cost("gpt-4o-mini-2024-07-18", usage)
      # {"usd": 0.0123, "model": "gpt-4o-mini-2024-07-18", "matched": "gpt-4o-mini",
      #  "price_per_1m": {"input": 0.075, "cached_input": 0.0375, "output": 0.3},
      #  "basis": "batch", "source": "built-in", "as_of": "2025-08", "note": None}

  The built-in table holds OpenAI's *standard* prices per 1M tokens as published on
  https://openai.com/api/pricing/ in August 2025 (:data:`PRICES_AS_OF`); Batch API
  prices are :data:`BATCH_DISCOUNT` (50%) of them. They are **estimates**: prices
  change, and the bill is the only truth. Pass ``prices={"model-prefix": {"input": ..,
  "cached_input": .., "output": ..}}`` (USD per 1M tokens, already at the batch rate)
  to override or extend the table.

  A model name matches the longest table key that equals it or prefixes it at a
  ``-`` boundary, so dated snapshots (``gpt-4o-mini-2024-07-18``) find their family
  and ``gpt-4o-mini`` is never priced as ``gpt-4o``. Fine-tuned models (``ft:...``)
  and unknown names give ``usd: None`` with a note, never an error.

  Image and video models are priced in their own units where tokens do not apply: per
  image (``dall-e-2``, ``dall-e-3``), per second of video (``sora-2``, ``sora-2-pro``), and
  for the GPT image models per 1M tokens with image input tokens at their own rate
  (:class:`ModelPrice`); those prices are dated :data:`MEDIA_PRICES_AS_OF`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: When the built-in standard prices were read from the public pricing page.
PRICES_AS_OF = "2025-08"

#: Batch API price as a fraction of the standard price.
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens. ``cached_input`` ``None`` means no cache discount (billed as input).

    Image and video models add units where tokens do not apply (``None``: not billed so):
    ``image_input`` (USD per 1M input *image* tokens of the GPT image models, whose text
    input costs ``input``), ``per_image`` / ``per_image_max`` (USD per image at the default
    and at the dearest size and quality) and ``per_second`` / ``per_second_max`` (USD per
    second of video at the default and at the dearest size).
    """

    input: float
    output: float
    cached_input: float | None = None
    image_input: float | None = None
    per_image: float | None = None
    per_image_max: float | None = None
    per_second: float | None = None
    per_second_max: float | None = None

    def scaled(self, factor: float) -> ModelPrice:
        def scale(value: float | None) -> float | None:
            return None if value is None else value * factor

        return ModelPrice(
            self.input * factor,
            self.output * factor,
            scale(self.cached_input),
            scale(self.image_input),
            scale(self.per_image),
            scale(self.per_image_max),
            scale(self.per_second),
            scale(self.per_second_max),
        )

    def to_dict(self) -> dict[str, float]:
        cached = self.input if self.cached_input is None else self.cached_input
        data = {"input": _r(self.input), "cached_input": _r(cached), "output": _r(self.output)}
        for name in _UNIT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = _r(value)
        return data


_UNIT_FIELDS = ("image_input", "per_image", "per_image_max", "per_second", "per_second_max")


#: Standard (non-batch) prices, USD per 1M tokens: (input, output, cached input).
#: Extra keys (o3-mini, o3-pro, gpt-5-pro) stop a longer name falling back to a
#: cheaper family by prefix.
STANDARD_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": ModelPrice(2.50, 10.00, 1.25),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, 0.075),
    "gpt-4.1": ModelPrice(2.00, 8.00, 0.50),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60, 0.10),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40, 0.025),
    "o3": ModelPrice(2.00, 8.00, 0.50),
    "o3-mini": ModelPrice(1.10, 4.40, 0.55),
    "o3-pro": ModelPrice(20.00, 80.00),
    "o4-mini": ModelPrice(1.10, 4.40, 0.275),
    "gpt-5": ModelPrice(1.25, 10.00, 0.125),
    "gpt-5-mini": ModelPrice(0.25, 2.00, 0.025),
    "gpt-5-nano": ModelPrice(0.05, 0.40, 0.005),
    "gpt-5-pro": ModelPrice(15.00, 120.00),
    "text-embedding-3-small": ModelPrice(0.02, 0.0),
    "text-embedding-3-large": ModelPrice(0.13, 0.0),
    "text-embedding-ada-002": ModelPrice(0.10, 0.0),
    "omni-moderation": ModelPrice(0.0, 0.0),
    "text-moderation": ModelPrice(0.0, 0.0),
    # Images and videos: :data:`MEDIA_PRICES_AS_OF`, not PRICES_AS_OF.
    "gpt-image-1": ModelPrice(5.00, 40.00, 1.25, image_input=10.00),
    "gpt-image-1-mini": ModelPrice(2.00, 8.00, 0.20, image_input=2.50),
    "dall-e-2": ModelPrice(0.0, 0.0, per_image=0.020, per_image_max=0.020),
    "dall-e-3": ModelPrice(0.0, 0.0, per_image=0.040, per_image_max=0.120),
    "sora-2": ModelPrice(0.0, 0.0, per_second=0.10, per_second_max=0.10),
    "sora-2-pro": ModelPrice(0.0, 0.0, per_second=0.30, per_second_max=0.50),
}
#: When the image and video prices above were read (public pricing page, standard rate;
#: dall-e per image at 1024x1024 standard, dearest at the largest HD size; sora per second
#: at 720p, dearest at 1024x1792). Newer image models (gpt-image-1.5, gpt-image-2) have no
#: built-in price: pass ``prices=`` to price them.
MEDIA_PRICES_AS_OF = "2025-10"
MEDIA_MODELS = ("gpt-image", "dall-e", "sora")

#: Built-in Batch API prices (standard x :data:`BATCH_DISCOUNT`), USD per 1M tokens.
BATCH_PRICES: dict[str, ModelPrice] = {k: v.scaled(BATCH_DISCOUNT) for k, v in STANDARD_PRICES.items()}


def _r(value: float) -> float:
    return round(value, 8)  # float noise off, sub-cent precision kept


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _detail(usage: Mapping[str, Any], key: str, field: str) -> int:
    details = usage.get(key)
    return _int(details.get(field)) if isinstance(details, Mapping) else 0


@dataclass
class Usage:
    """Token counts summed over responses; ``responses`` counts bodies that reported usage.

    ``cached_tokens`` are part of ``input_tokens`` and ``reasoning_tokens`` part of
    ``output_tokens``, as the API reports them.
    """

    responses: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    #: Input image tokens of the GPT image models (part of ``input_tokens``).
    image_input_tokens: int = 0
    #: Images returned (``ImagesResponse.data``) and seconds of video (``Video.seconds``).
    images: int = 0
    video_seconds: int = 0

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Normalize one ``usage`` object of any endpoint shape (``None`` -> zeros)."""
        if not isinstance(usage, Mapping):
            return cls()
        image_inp = 0
        if "input_tokens" in usage or "output_tokens" in usage:  # responses / batch object / images
            inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
            cached = _detail(usage, "input_tokens_details", "cached_tokens")
            reasoning = _detail(usage, "output_tokens_details", "reasoning_tokens")
            image_inp = _detail(usage, "input_tokens_details", "image_tokens")
        else:  # chat / completions / embeddings
            inp, out = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
            cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
            reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
        total = _int(usage.get("total_tokens")) or inp + out
        return cls(1, inp, cached, out, reasoning, total, image_inp)

    @classmethod
    def from_body(cls, body: Any) -> Usage:
        """Usage of one response body (zeros when it has none): tokens, and the images of an
        ``ImagesResponse`` or the seconds of a ``Video`` (which report no tokens)."""
        if not isinstance(body, Mapping):
            return cls()
        usage = cls.from_usage(body.get("usage"))
        if body.get("object") == "video":
            usage.responses, usage.video_seconds = 1, _int(body.get("seconds"))
        elif "created" in body and "object" not in body and isinstance(body.get("data"), list):
            usage.responses, usage.images = 1, len(body["data"])  # ImagesResponse
        return usage

    def add(self, other: Usage) -> None:
        """Add ``other`` in place."""
        self.responses += other.responses
        self.input_tokens += other.input_tokens
        self.cached_tokens += other.cached_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.total_tokens += other.total_tokens
        self.image_input_tokens += other.image_input_tokens
        self.images += other.images
        self.video_seconds += other.video_seconds

    def to_dict(self) -> dict[str, int]:
        """The counts; the image and video ones only when not zero (text batches keep their shape)."""
        data = asdict(self)
        for name in ("image_input_tokens", "images", "video_seconds"):
            if not data[name]:
                del data[name]
        return data


def _as_price(key: str, value: ModelPrice | Mapping[str, Any]) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    try:
        cached = value.get("cached_input")
        units = {name: float(value[name]) for name in _UNIT_FIELDS if value.get(name) is not None}
        return ModelPrice(
            float(value.get("input", 0.0) if units else value["input"]),
            float(value.get("output", 0.0)),
            None if cached is None else float(cached),
            **units,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"prices[{key!r}] must be a mapping like {{'input': 1.25, 'cached_input': 0.625, "
            f"'output': 5.0}} (USD per 1M tokens at the batch rate), got {value!r}"
        ) from exc


def match_price(
    model: str | None, prices: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None
) -> tuple[str, ModelPrice, str] | None:
    """Find the price of ``model``: ``(matched key, batch price, "built-in" | "override")`` or ``None``.

    :param model: Model name as the request or response names it.
    :param prices: Overrides merged over :data:`BATCH_PRICES` (an override wins on an equal key).
    """
    if not model:
        return None
    table: dict[str, tuple[ModelPrice, str]] = {k: (v, "built-in") for k, v in BATCH_PRICES.items()}
    for key, value in (prices or {}).items():
        table[key] = (_as_price(key, value), "override")
    best = max(
        (k for k in table if model == k or model.startswith(k + "-")),
        key=len,
        default=None,
    )
    if best is None:
        return None
    price, source = table[best]
    return best, price, source


def estimate_cost(
    model: str | None,
    usage: Usage | Mapping[str, Any],
    prices: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Estimate the Batch API cost of ``usage`` for ``model``.

    :param model: Model name; dated snapshots match their family by longest prefix.
    :param usage: A :class:`Usage`, or a raw ``usage`` mapping of any endpoint shape.
    :param prices: Overrides, ``{prefix: {"input", "cached_input", "output"}}`` in USD per
        1M tokens at the batch rate, merged over the built-in table.
    :return: ``{"usd": float | None, "model", "matched", "price_per_1m", "basis": "batch",
        "source", "as_of", "note"}``; ``usd`` is ``None`` (with a note) for an unknown model.
    :raises ValueError: an override entry is malformed.
    """
    if not isinstance(usage, Usage):
        usage = Usage.from_usage(usage)
    found = match_price(model, prices)
    result: dict[str, Any] = {
        "usd": None,
        "model": model,
        "matched": None,
        "price_per_1m": None,
        "basis": "batch",
        "source": None,
        "as_of": PRICES_AS_OF,
        "note": None,
    }
    if found is None:
        result["note"] = (
            f"no price known for model {model!r}: cost not estimated; pass prices="
            "{'<model prefix>': {'input': .., 'cached_input': .., 'output': ..}} to price it"
        )
        return result
    key, price, source = found
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    image_inp = 0 if price.image_input is None else min(usage.image_input_tokens, usage.input_tokens - cached)
    usd = (
        (usage.input_tokens - cached - image_inp) * price.input
        + image_inp * (price.image_input or 0.0)
        + cached * cached_rate
        + usage.output_tokens * price.output
    ) / 1_000_000
    usd += usage.images * (price.per_image or 0.0) + usage.video_seconds * (price.per_second or 0.0)
    result.update(usd=_r(usd), matched=key, price_per_1m=price.to_dict(), source=source)
    if source == "built-in":
        as_of = MEDIA_PRICES_AS_OF if key.startswith(MEDIA_MODELS) else PRICES_AS_OF
        result["as_of"] = as_of
        result["note"] = f"estimate from built-in prices as of {as_of}; the invoice is authoritative"
        if usage.images and price.per_image is not None:
            result["note"] += "; images priced at the default size and quality (responses do not say)"
    return result


def format_usd(amount: float | None) -> str:
    """A cost as a person reads it: ``$12.34``, ``$0.35``, ``<$0.01``; ``unknown`` for ``None``.

    Never ``$0.000052`` or ``5.2e-05``: below a cent says so (the exact value stays in the manifest).
    """
    if amount is None:
        return "unknown"
    value = float(amount)
    if value == 0:
        return "$0.00"
    if 0 < value < 0.01:
        return "<$0.01"
    return f"${value:,.2f}"
