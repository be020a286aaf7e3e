"""The OpenAPI document as the service really answers: FastAPI documents its own validation error
shape (``{"detail": [...]}``) for 422, but api/errors.py answers every error as
``{"error": {"code", "message", ...}}`` on /v1 and ``{"message", "error"}`` on legacy paths."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

V1_ERROR = {
    "title": "ErrorV1", "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
}
LEGACY_ERROR = {
    "title": "ErrorLegacy", "type": "object", "required": ["message", "error"],
    "properties": {"message": {"type": "string"}, "error": {"type": "string"}},
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorV1"], components["ErrorLegacy"] = V1_ERROR, LEGACY_ERROR
        for path, item in schema.get("paths", {}).items():
            ref = {"$ref": "#/components/schemas/" + ("ErrorV1" if path.startswith("/v1/") else "ErrorLegacy")}
            for operation in item.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Invalid input",
                                        "content": {"application/json": {"schema": ref}}}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
