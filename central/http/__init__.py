"""The JSON API, the pages and the event streams: routes, authentication and the audit of API
actions, CSRF, client addresses, the error middleware, the API models that validate requests and
generate the OpenAPI document, CSV imports (judged by those models) and webhooks (events
delivered over HTTP in the API's JSON).

May import: central.admin, central.ingest, central.checkin, central.storage, central.core,
central.domain."""
