"""Infrastructure every part uses and that holds no records: settings, the injected clock,
central's keys, the in-process event hub, caches, rate limits, the signature pool, the outage
tracker, metrics, the one error type and query-parameter rules.

May import: central.domain."""
