"""Durable mode of deferred work: a queue in Redis (SAQ) and worker processes, behind
``toolkit.defer`` when ``defer.durable.enabled`` is on; nothing here is called directly.

Imported only when durable mode is on, so SAQ stays an optional dependency."""

__all__: list[str] = []
