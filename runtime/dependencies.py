"""What a route of either API reaches on ``request.app.state``, as ``Annotated`` dependencies.

``create_app`` (each API's composition root) builds the collaborators once and stores
them on ``app.state``: ``settings`` (:class:`~runtime.settings.Settings`), ``engine`` (the
API's :class:`~sqlalchemy.ext.asyncio.AsyncEngine`), ``breaker`` (its
:class:`~runtime.breaker.DatabaseBreaker`) and ``tokens`` (read by
:func:`runtime.auth.requires`); a route names what it needs by type, e.g.
``settings: AppSettings``. A missing attribute is an ``AttributeError``, a 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.breaker import DatabaseBreaker
from runtime.settings import Settings

# Dependencies are coroutines: FastAPI would run a plain ``def`` in its thread pool,
# two thread hops per request on the hot path.


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with (``app.state.settings``)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    """The app's database engine (``app.state.engine``)."""
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_breaker(request: Request) -> DatabaseBreaker:
    """The circuit breaker in front of the app's database (``app.state.breaker``)."""
    breaker: DatabaseBreaker = request.app.state.breaker
    return breaker


async def get_correlation_id(request: Request) -> str:
    """The request's correlation id, set by :class:`~runtime.middleware.RequestContextMiddleware`.

    Raises ``KeyError`` (a 500) in an app without that middleware.
    """
    value: str = request.scope["state"]["correlation_id"]
    return value


AppSettings = Annotated[Settings, Depends(get_settings)]
Engine = Annotated[AsyncEngine, Depends(get_engine)]
Breaker = Annotated[DatabaseBreaker, Depends(get_breaker)]
CorrelationId = Annotated[str, Depends(get_correlation_id)]
