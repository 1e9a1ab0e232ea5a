"""Admin routes: the flags API, the flags and status pages, ``/stats`` and cache purges,
behind named tokens.

``install()`` mounts them at ``admin.path`` (``/_toolkit``) only when ``admin.tokens`` or
``admin.read_tokens`` names at least one token; without one, every admin path is the app's
plain 404. Every route, the pages included, takes HTTP Basic (``name:token``, which browsers
prompt for and resend with the page's own requests) or ``Authorization: Bearer <token>``. A
read token may only read (GET and HEAD; anything else is a 403). Changes are recorded with the
token's name.

    GET    /                    the page                               (_page.py)
    GET    /flags               every flag, its override and what it serves now  (_flags.py)
    GET    /flags/{key}         one flag
    PUT    /flags/{key}         {"variant": "off"}: serve it to everyone
    PUT    /flags/{key}/rollout {"variant": "on", "percentage": 20}: sticky percentage rollout
    DELETE /flags/{key}         back to the default (no body, or {})
    GET    /history?limit=50    the newest changes first
    POST   /cache/invalidate    {"tags": ["catalog"]}: delete every cached entry under them
                                                                        (_cache.py)
    GET    /status              the status page                        (_status.py)
    GET    /stats?traces=20     its JSON: percentiles, caches, breakers, pools, loop, traces

What caches, breakers and pools show on the status page is in ``_sections.py``.
Authentication and roles are in ``_auth.py``, the mount and its no-store answers in
``_app.py``, the JSON bodies and problem answers the routes share in ``_http.py``.
"""

from __future__ import annotations

from toolkit.admin._app import admin_routes
from toolkit.admin._auth import REALM
from toolkit.admin._flags import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT
from toolkit.admin._http import MAX_BODY_BYTES
from toolkit.admin._status import MAX_STATS_TRACES

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "MAX_BODY_BYTES",
    "MAX_HISTORY_LIMIT",
    "MAX_STATS_TRACES",
    "REALM",
    "admin_routes",
]
