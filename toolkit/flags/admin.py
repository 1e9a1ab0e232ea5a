"""Deprecated: the admin routes are :mod:`toolkit.admin` (flags, the cache, the page); the
names here warn and name their new place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import toolkit.admin
from toolkit._deprecated import moved_attributes

if TYPE_CHECKING:  # the old places, deprecated: a warning at run time
    from toolkit.admin import DEFAULT_HISTORY_LIMIT as DEFAULT_HISTORY_LIMIT
    from toolkit.admin import MAX_BODY_BYTES as MAX_BODY_BYTES
    from toolkit.admin import MAX_HISTORY_LIMIT as MAX_HISTORY_LIMIT
    from toolkit.admin import REALM as REALM
    from toolkit.admin import admin_routes as admin_routes
else:
    __getattr__ = moved_attributes(__name__, dict.fromkeys(toolkit.admin.__all__, "toolkit.admin"))
