"""Amend the OpenAPI document FastAPI generates, operation by operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

#: Changes one operation object of the document in place.
Amendment = Callable[[dict[str, Any]], None]


def amend_operations(app: FastAPI, amend: Amendment) -> None:
    """Apply ``amend`` to every operation of ``app``'s document when it is generated.

    Wraps ``app.openapi``, so amendments installed one after another all apply, in order;
    FastAPI's cached document is returned as it is.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict):
                    amend(operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
