"""The query API's route: ``GET /applications/{application_id}/status``.

The route reads the id from the path and the caller (a token with ``applications:read``)
and asks the :class:`~query_api.reader.StatusReader` the composition root stored on
``app.state.reader``; the rate limit's headers go on the answer.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, Response

from query_api.models import ApplicationStatusResponse
from query_api.reader import StatusReader
from runtime.auth import Principal, auth_responses, requires
from runtime.problems import PROBLEM_CONTENT

READ_SCOPE = "applications:read"


# A coroutine, as in runtime.dependencies: a plain ``def`` would run in the thread pool.
async def get_reader(request: Request) -> StatusReader:
    """The status reader (``app.state.reader``)."""
    reader: StatusReader = request.app.state.reader
    return reader


Reader = Annotated[StatusReader, Depends(get_reader)]
Client = Annotated[Principal, Depends(requires(READ_SCOPE))]
ApplicationId = Annotated[UUID, Path(description="The id returned by POST /applications.")]

router = APIRouter()


# No docstring on purpose: FastAPI would publish it as the operation's description.
@router.get(
    "/applications/{application_id}/status",
    response_model=ApplicationStatusResponse,
    operation_id="getApplicationStatus",
    summary="The application's status: PENDING until decided, then the decision.",
    responses={
        **auth_responses(READ_SCOPE),
        404: {
            "description": "No application of this client has this id (another"
            " client's application is not found either).",
            **PROBLEM_CONTENT,
        },
        422: {"description": "The id is not a UUID.", **PROBLEM_CONTENT},
        503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
    },
)
async def get_status(  # noqa: D103
    application_id: ApplicationId, caller: Client, read: Reader, response: Response
) -> ApplicationStatusResponse:
    status, rate = await read(application_id, caller.client_id)
    response.headers.update(rate)
    return status
