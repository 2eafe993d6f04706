"""The JSON API's contract: one pydantic model per request body, query-parameter set and
response. The models validate what clients send (every failure becomes the one error format
of `central.core.errors`, status 400 naming the field) and generate the OpenAPI 3.1 document, so the
description and the checks cannot drift apart.

Owns: field types (`fields`), request and response models (`bodies`, `queries`,
`responses`), parsing and serialising (`parse`), the operation registry (`spec`) and the
document built from it (`document`). May import `central.core.errors`, `central.core.params`, the
protocol's name rules and plain value modules (`timetable`, `policy`, `webhooks`, `store`
dataclasses); never the HTTP route modules, which import it."""
