"""Blocking calls off the event loop: ``@toolkit.offload`` and ``toolkit.run_sync``, on the
toolkit's bounded pool of daemon threads."""

from toolkit.pipelines.offloading._decorator import Offloaded, offload, run_sync

__all__ = ["Offloaded", "offload", "run_sync"]
