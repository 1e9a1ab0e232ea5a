"""The toolkit's own random stream: jitter, and the ids of the spans its own tracer provider
makes. It never draws from the global ``random`` module, so an app that seeds ``random`` for a
reproducible run keeps its sequence whatever the toolkit does in the background."""

from __future__ import annotations

import random
from typing import Final

RANDOM: Final = random.Random()
"""Seeded from the operating system once, at import."""
