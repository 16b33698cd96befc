"""``@task.openai_batch``: a TaskFlow function that returns the requests of a batch.

The function returns records (rendered by ``request_template``) or ready request
lines; the task then behaves as :class:`OpenAIBatchSubmitOperator`: validate,
shard, submit idempotently, defer, and return the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import (
    DecoratedOperator,
    TaskDecorator,
    task_decorator_factory,
)
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_batch_provider._compat import determine_kwargs
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class _OpenAIBatchDecoratedOperator(DecoratedOperator, OpenAIBatchSubmitOperator):
    """Calls the function for the requests, then submits them like the operator.

    The function must be deterministic across tries: its output is fingerprinted, and
    a retry re-attaches to the batches already created only when the fingerprint is
    the same (a function that embeds ``datetime.now()`` pays for new batches on every
    retry). The returned requests are not rendered as Jinja templates.

    :param python_callable: Returns a list of records or request lines.
    :param op_args: Positional arguments for the callable.
    :param op_kwargs: Keyword arguments for the callable.
    """

    template_fields: Sequence[str] = tuple(
        f
        for f in (*DecoratedOperator.template_fields, *OpenAIBatchSubmitOperator.template_fields)
        if f != "requests"
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **OpenAIBatchSubmitOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.openai_batch"

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("multiple_outputs", None)  # the result is one manifest
        for name in ("input_path", "requests"):
            if name in kwargs:
                raise ValueError(
                    f"@task.openai_batch takes its requests from the function's return value: remove "
                    f"{name}=, or use OpenAIBatchSubmitOperator(input_path=...) for a JSONL file."
                )
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            requests=SET_DURING_EXECUTION,
            multiple_outputs=False,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.requests = self.python_callable(*self.op_args, **kwargs)
        return OpenAIBatchSubmitOperator.execute(self, context)


def openai_batch_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Turn a function that returns batch requests into an OpenAI batch submit task.

    Usage::

        @task.openai_batch(
            request_template=ChatTemplate.from_prompt("gpt-4o-mini", "Classify: {text}"),
            custom_id_field="id",
        )
        def questions(rows: list[dict]) -> list[dict]:
            return [{"id": r["id"], "text": r["text"]} for r in rows]

    Every argument of :class:`~airflow_batch_provider.operators.submit.OpenAIBatchSubmitOperator`
    except ``input_path``/``requests`` is accepted. The XCom value is the submit manifest.

    :param python_callable: The function to decorate.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_OpenAIBatchDecoratedOperator,
        **kwargs,
    )
