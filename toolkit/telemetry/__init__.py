"""OpenTelemetry for the toolkit: the name registry (``names``), provider setup (``setup``)
and the HTTP middleware (``middleware``; also ``toolkit.TelemetryMiddleware``).

Nothing is imported here, so that the storage layer can use ``names`` without pulling in
the middleware and what it depends on.
"""
