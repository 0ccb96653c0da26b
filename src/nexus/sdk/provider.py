"""NEXUS flags behind the OpenFeature API: ``api.set_provider(NexusProvider(client))``.

The provider maps OpenFeature's evaluation context (targeting key + attributes) onto NEXUS's,
passes reasons and error codes through (they are spelled alike; ``PREREQUISITE_FAILED`` is a
NEXUS reason OpenFeature carries as a plain string), reports the variation as the variant and
the flag's version (and matching rule id) as flag metadata. A value of the wrong type for the
call (``get_string_value`` on a boolean flag) resolves to the caller's default with
``TYPE_MISMATCH``. Evaluation happens in the client's process, so the async methods of
:class:`AbstractProvider` (which call the sync ones) are as fast as the sync ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagMetadata, FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from nexus.sdk.client import NexusClient

__all__ = ["PROVIDER_NAME", "NexusProvider"]

PROVIDER_NAME: Final = "NEXUS"
_MISMATCH: Final = object()
_REASONS: Final = {reason.value: reason for reason in Reason}
_ERROR_CODES: Final = {code.value: code for code in ErrorCode}

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


def _boolean(value: Any) -> Any:
    return value if isinstance(value, bool) else _MISMATCH


def _string(value: Any) -> Any:
    return value if isinstance(value, str) else _MISMATCH


def _integer(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else _MISMATCH


def _float(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)  # OpenFeature checks isinstance(value, float)
    return _MISMATCH


def _object(value: Any) -> Any:
    return value if isinstance(value, dict | list) else _MISMATCH


class NexusProvider(AbstractProvider):
    """An OpenFeature provider evaluating through a :class:`NexusClient`.

    The provider does not own the client: close the client yourself when done.
    """

    def __init__(self, client: NexusClient) -> None:
        super().__init__()
        self._client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _boolean, "boolean")

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _string, "string")

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _integer, "integer")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, _float, "number")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(
            flag_key, default_value, evaluation_context, _object, "object or array"
        )

    def _resolve(
        self,
        flag_key: str,
        default_value: T,
        evaluation_context: EvaluationContext | None,
        convert: Callable[[Any], Any],
        expected: str,
    ) -> FlagResolutionDetails[T]:
        if evaluation_context is None:
            result = self._client.evaluate(flag_key)
        else:
            result = self._client.evaluate(
                flag_key, evaluation_context.targeting_key, evaluation_context.attributes
            )
        metadata: dict[str, bool | int | float | str] = {}
        if result.version:
            metadata["version"] = result.version
        if result.rule_id is not None:
            metadata["rule_id"] = result.rule_id
        flag_metadata: FlagMetadata = metadata
        if result.error_code is not None:
            return FlagResolutionDetails(
                value=default_value,
                error_code=_ERROR_CODES.get(result.error_code, ErrorCode.GENERAL),
                error_message=result.error_message,
                reason=Reason.ERROR,
                flag_metadata=flag_metadata,
            )
        value = convert(result.value)
        if value is _MISMATCH:
            return FlagResolutionDetails(
                value=default_value,
                error_code=ErrorCode.TYPE_MISMATCH,
                error_message=(
                    f"flag {flag_key!r} serves {type(result.value).__name__} "
                    f"{result.value!r}, not a {expected}"
                ),
                reason=Reason.ERROR,
                flag_metadata=flag_metadata,
            )
        return FlagResolutionDetails(
            value=value,
            reason=_REASONS.get(result.reason, result.reason),
            variant=result.variation,
            flag_metadata=flag_metadata,
        )
