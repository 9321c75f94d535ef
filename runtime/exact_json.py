"""JSON request bodies read exactly: every number a :class:`~decimal.Decimal`.

A route of class :class:`ExactJsonRoute` hands its handler an :class:`ExactJsonRequest`,
so FastAPI parses the body with it; the models then decide which numbers are acceptable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


class ExactJsonRequest(Request):
    """A request whose JSON numbers are read exactly, as :class:`~decimal.Decimal`.

    The standard parser turns ``75000.10`` into a float (inexact) and refuses an integer
    of more than 4,300 digits (Python's guard against quadratic int parsing), so a valid
    JSON body got "cannot parse" instead of a 422 naming the field. Every number is a
    Decimal here; the models decide what is acceptable. ``NaN`` and ``Infinity`` are not
    JSON and stay unparsable.
    """

    async def json(self) -> Any:
        """The body parsed as JSON, numbers as Decimal."""
        if not hasattr(self, "_json"):
            self._json = json.loads(
                await self.body(),
                parse_int=Decimal,
                parse_float=Decimal,
                parse_constant=_not_json,
            )
        return self._json


class ExactJsonRoute(APIRoute):
    """An API route that parses its JSON body with :class:`ExactJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, given an :class:`ExactJsonRequest`."""
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            return await handler(ExactJsonRequest(request.scope, request.receive))

        return exact
