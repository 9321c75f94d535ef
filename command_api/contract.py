"""The command API's OpenAPI contract beyond its routes.

Tags, the asynchronous contract, the idempotency rules, the response headers and the
link from the submit to the status operation.
"""

from __future__ import annotations

from runtime.openapi import Contract, Operation
from runtime.settings import Settings

SUBMIT_DESCRIPTION = """\
Stores the application and its `LoanApplicationSubmitted` event in one transaction and
answers **202** at once: the credit check and the decision happen asynchronously.

**Asynchronous contract.** Poll the `Location` URL (the query API's
`GET /applications/{application_id}/status`) until `status` is no longer `PENDING`; it
becomes `PRE_APPROVED`, `REJECTED` or `MANUAL_REVIEW`, normally within a second.

**Idempotency.** Send an `Idempotency-Key` (1 to 255 visible ASCII characters) to make
retries safe: the same key with the same body answers the first request's 202 again
(`Idempotent-Replayed: true`) for 24 hours; with another body it is a 422; while the first
request with that key is still running it is a 409 with `Retry-After`. Keys are per
client.

**Retries.** A 503 carries `Retry-After` and an `outcome`: `not_stored` (retry freely) or
`unknown` (the commit was sent and not answered: retry **only** with the same
Idempotency-Key, or a second application may be created). A 429 carries `Retry-After`
and the `RateLimit` headers.
"""


def contract(settings: Settings) -> Contract:
    """The command API's contract; the link points at the query API of ``settings``."""
    status_operation = (
        f"{settings.query_api_base_url}/openapi.json"
        # A URI reference: the path's braces percent-encoded (RFC 3986), "/" as "~1".
        "#/paths/~1applications~1%7Bapplication_id%7D~1status/get"
    )
    return Contract(
        title="prequal command API",
        description="Submit loan prequalification applications; each decision follows"
        " asynchronously (poll the Location).",
        tags={
            "applications": "Submit loan prequalification applications.",
            "operations": "Probes for orchestrators and load balancers (no token).",
        },
        operations={
            "submitApplication": Operation(
                tag="applications",
                description=SUBMIT_DESCRIPTION,
                headers={"202": ("Location", "Idempotent-Replayed")},
                links={
                    "202": {
                        "GetApplicationStatus": {
                            "operationRef": status_operation,
                            "parameters": {"application_id": "$response.body#/application_id"},
                            "description": "Poll until the status is no longer PENDING.",
                        }
                    }
                },
            )
        },
    )
