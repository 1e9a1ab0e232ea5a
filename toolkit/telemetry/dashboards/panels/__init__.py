"""One module per capability, each with a ``row()`` of the panels that chart its metrics;
the bundled dashboards (``dashboards/bundled.py``) put the rows together by concern."""

__all__: list[str] = []  # each module is one row
