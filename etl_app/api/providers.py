"""External lookup providers (etl_app.lookups): their counters and circuit breakers.

- ``GET /api/v1/providers`` (``read``): every configured provider (etl_app.lookups.registry) with
  ``host`` (its base URL's host and port only; null when off), ``rate``, ``ttl_seconds``, the
  counters every worker adds to (``calls`` by outcome, ``cache`` hits and misses, ``errors`` by
  kind, ``rate_limited``: 429 answers) and its breaker now (``state``, ``open_for_seconds`` of
  cool-down left, consecutive ``failures``, ``opened_count``). 503 when Redis does not answer.
- ``POST /api/v1/providers/<provider>/reset`` (``operate``): closes the provider's breaker now
  (its opened count is kept); audited ``breaker_reset`` with target ``{provider}``; answers 200
  with the provider as the list shows it. 404 for an unknown provider.
"""

from __future__ import annotations

from flask import Blueprint

from etl_app.api.bodies import one_of
from etl_app.api.bodies_operate import Provider, Providers
from etl_app.api.spec import operation, reply
from etl_app.web.providers import listed_providers, reset_provider

bp = Blueprint("providers", __name__, url_prefix="/api/v1/providers")


@bp.get("")
@operation(
    summary="The external lookup providers: calls, cache hits and misses, errors, 429s, breaker",
    tags=["providers"],
    responses={200: ("providers", Providers), 503: "Redis did not answer"},
)
def list_providers():
    return reply(Providers, {"providers": listed_providers()})


@bp.post("/<provider>/reset")
@operation(
    lambda ctx: {
        "summary": "Close a provider's circuit breaker now (audited breaker_reset)",
        "tags": ["providers"],
        "path": {"provider": one_of(ctx.providers)},
        "responses": {
            200: ("the breaker is closed; the provider as listed", Provider),
            404: "unknown provider",
            503: "Redis did not answer",
        },
    }
)
def reset(provider: str):
    return reply(Provider, reset_provider(provider))
