"""The OpenAPI 3.1 document, generated from the operations registry (`spec`) and the models:
request bodies inline (their fields in view), answers and shared parts under
components/schemas, query and path parameters one per model field."""

from __future__ import annotations

import typing

import pydantic

from central.http.apimodels import responses
from central.http.apimodels import spec

Schema = dict[str, typing.Any]
REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "The request is invalid (error.details names the field).",
    401: "No, or an unknown, bearer token.",
    403: "The token's role (or a teacher's courses) does not allow this.",
    404: "No such resource (another site's answers exactly like one that does not exist).",
    409: "The request conflicts with the current state.",
    413: "The body is too large.",
    415: "The body's media type is not accepted.",
    429: "Too many requests from this client; wait (Retry-After).",
    503: "The store (store_unavailable), or for commands the broker, is unavailable; retry"
    " after Retry-After.",
}


class _Components:
    """Collects the models' shared definitions under components/schemas."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def add(self, name: str, schema: Schema) -> None:
        if self.schemas.get(name, schema) != schema:
            raise ValueError(f"two different models are both called {name}")
        self.schemas[name] = schema

    def model(
        self, model: type[pydantic.BaseModel], mode: typing.Literal["validation", "serialization"]
    ) -> Schema:
        """The model's own schema (inline), its parts moved to the components."""
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, part in schema.pop("$defs", {}).items():
            self.add(name, part)
        return schema

    def reference(self, model: type[pydantic.BaseModel]) -> Schema:
        """A $ref to the model's answer schema, added to the components."""
        self.add(model.__name__, self.model(model, "serialization"))
        return {"$ref": REF.format(model=model.__name__)}

    def content(
        self, found: spec.Content, mode: typing.Literal["validation", "serialization"]
    ) -> Schema:
        if isinstance(found, dict):
            return found
        if mode == "serialization":
            return self.reference(found)
        return self.model(found, mode)


def _parameters(
    components: _Components, model: type[pydantic.BaseModel] | None, where: str
) -> list[Schema]:
    if model is None:
        return []
    schema = components.model(model, "validation")
    required = set(schema.get("required", ()))
    found = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        description = prop.pop("description", "")
        if "anyOf" in prop and prop["anyOf"][1:] == [{"type": "null"}]:
            prop = {**prop.pop("anyOf")[0], **prop}  # absent, not null: a query has no null
        if prop.get("default", 0) is None:
            del prop["default"]
        parameter: Schema = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        found.append(parameter)
    return found


def _operation(components: _Components, op: spec.Operation) -> Schema:
    parameters = _parameters(components, op.path_params, "path") + _parameters(
        components, op.query, "query"
    )
    codes = set(op.errors) | {400, 503}  # 503 store_unavailable: any route during an outage
    if op.roles is not None:
        codes |= {401, 403}
    if any(p["in"] == "path" or p["name"] == "site" for p in parameters):
        codes.add(404)  # a path or ?site= of another site answers as one that does not exist
    if op.body is not None:
        codes.add(413)
    operation: Schema = {
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "security": [{"bearer": []}] if op.roles is not None else [],
        "responses": {
            str(op.ok): {
                "description": "OK",
                "content": {op.media: {"schema": components.content(op.response, "serialization")}},
            },
            **{str(code): {"$ref": f"#/components/responses/E{code}"} for code in sorted(codes)},
        },
    }
    if op.roles is not None:
        with_operator = (*op.roles, "operator") if "admin" in op.roles else op.roles
        operation["description"] = (
            "Roles: " + ", ".join(with_operator) + ". Limited to the token's site"
            " (an operator's: every site)."
        )
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {op.body_media: {"schema": components.content(op.body, "validation")}},
        }
    return operation


def build(operations: typing.Iterable[spec.Operation]) -> Schema:
    components = _Components()
    components.reference(responses.Error)
    paths: dict[str, dict[str, Schema]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(components, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomproof central",
            "version": "1",
            "description": "Room attendance: check-ins, timetable attendance, devices, evidence"
            " and webhooks. Every error has the body"
            ' {"error": {"code", "message", "details", "request_id"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "responses": {
                f"E{code}": {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="Error")}}
                    },
                }
                for code, text in ERROR_TEXT.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin API token: admin, teacher or auditor of one"
                    " site, or an operator of every site",
                }
            },
        },
    }
