"""The NEXUS Python SDK: feature flags evaluated in your process, with an OpenFeature provider.

::

    from nexus.sdk import NexusClient, NexusProvider

    with NexusClient("https://nexus.example.com", "nx_sec_...") as nexus:
        if nexus.bool_value("new-checkout", False, visitor_id, {"country": "DE"}):
            ...

        from openfeature import api
        api.set_provider(NexusProvider(nexus))
        api.get_client().get_boolean_value("new-checkout", False)

The SDK stands alone: of NEXUS it needs only the pure evaluator
(:mod:`nexus.experiments.flags`), which import-linter enforces.
"""

from nexus.experiments.flags import Evaluation, EvaluationContext
from nexus.sdk.client import NexusClient, authorization_header
from nexus.sdk.provider import NexusProvider

__all__ = [
    "Evaluation",
    "EvaluationContext",
    "NexusClient",
    "NexusProvider",
    "authorization_header",
]
