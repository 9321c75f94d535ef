"""The HTTP bodies of the query API (separate from the projection row)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schema.events import ApplicationStatus


class ApplicationStatusResponse(BaseModel):
    """Where an application stands, as the applicant may see it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "application_id": "3f2b8c1e-5d4a-4e8b-9c7d-1a2b3c4d5e6f",
                    "status": "PRE_APPROVED",
                    "cibil_score": 790,
                    "submitted_at": "2026-11-22T10:15:30.120000Z",
                    "decided_at": "2026-11-22T10:15:30.170000Z",
                }
            ]
        }
    )

    application_id: UUID
    status: ApplicationStatus
    cibil_score: int | None = Field(
        default=None, description="The simulated CIBIL score, once the application is decided."
    )
    submitted_at: datetime
    decided_at: datetime | None = None
