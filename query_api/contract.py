"""The query API's OpenAPI contract beyond its routes: tags and the polling contract."""

from __future__ import annotations

from runtime.openapi import Contract, Operation

STATUS_DESCRIPTION = """\
The application's current status, as the command API's `Location` header names it.
`PENDING` until the credit check and the decision are done (normally within a second),
then `PRE_APPROVED`, `REJECTED` or `MANUAL_REVIEW` with the CIBIL score. Poll it,
every 0.2 to 1 s, until the status is no longer `PENDING`. A client reads only its own
applications: another client's id is a 404, as an unknown one is. A 503 carries
`Retry-After`; wait that long and ask again.
"""

CONTRACT = Contract(
    title="prequal query API",
    description="Read the status of loan prequalification applications.",
    tags={
        "applications": "Read the status of your loan prequalification applications.",
        "operations": "Probes for orchestrators and load balancers (no token).",
    },
    operations={
        "getApplicationStatus": Operation(tag="applications", description=STATUS_DESCRIPTION)
    },
)
