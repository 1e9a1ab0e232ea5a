"""Deferred work: ``toolkit.defer`` and ``@toolkit.background``, in process or durable."""

from toolkit.pipelines.deferred._background import Background, background, defer
from toolkit.pipelines.deferred._task import TaskHandle

__all__ = ["Background", "TaskHandle", "background", "defer"]
