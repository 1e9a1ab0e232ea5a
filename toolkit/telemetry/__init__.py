"""OpenTelemetry for the toolkit: the name registry (``names``, each metric's record built
with ``metric``), the request-path counters behind observable instruments (``counts``),
bounded metric labels (``labels``), provider setup (``setup``), the HTTP middleware
(``middleware``; also ``toolkit.TelemetryMiddleware``) and the Grafana dashboards
(``dashboards``).

Nothing is imported here, so that the storage layer can use ``names`` without pulling in
the middleware and what it depends on.
"""

__all__: list[str] = []  # its modules are the public surface
