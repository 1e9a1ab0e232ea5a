"""How ``@cached`` stores a value: aiocache's serializers, producing the bytes the store keeps.

The serializer is chosen per function (``serializer=``) or for every function by the store's
settings (``cache.serializer``); its name is part of every key (see :mod:`_function_key`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, get_args

from toolkit.cache._store import CacheStore

logger = logging.getLogger("toolkit.cache")

SerializerName = Literal["json", "msgpack", "pickle"]
SERIALIZERS: Final = get_args(SerializerName)
_AIOCACHE_SERIALIZERS: Final = {
    "json": "JsonSerializer",
    "msgpack": "MsgPackSerializer",
    "pickle": "PickleSerializer",
}
PICKLE_WARNING: Final = (
    "%s stores values with pickle (serializer='pickle'): whoever can write to the cache "
    "backend can run code in this process. Use it only if you trust every writer; 'json' "
    "and 'msgpack' cannot execute anything."
)
"""Logged once per function or store that chooses pickle; ``%s`` names which."""


class _Serializer(Protocol):
    """What aiocache's serializers offer (``aiocache.serializers``)."""

    def dumps(self, value: Any) -> str | bytes: ...

    def loads(self, value: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Codec:
    """An aiocache serializer, producing the bytes the store keeps."""

    name: str
    serializer: _Serializer

    def dumps(self, value: Any) -> bytes:
        out = self.serializer.dumps(value)
        return out.encode() if isinstance(out, str) else out

    def loads(self, raw: bytes) -> Any:
        return self.serializer.loads(raw)


@functools.cache
def load_serializers() -> Any:
    """aiocache's serializers module, imported once. Not at ``import toolkit``: aiocache's
    package import pulls in its redis backend (~80 ms), which an app with no cached function
    should not pay; ``@cached`` calls this when it decorates, so the import happens while the
    app's modules load, never on the event loop during the first cached call."""
    return importlib.import_module("aiocache.serializers")


@functools.cache
def codec(name: str) -> Codec:
    """The codec of serializer ``name`` (one of :data:`SERIALIZERS`), made once."""
    serializer: _Serializer = getattr(load_serializers(), _AIOCACHE_SERIALIZERS[name])()
    return Codec(name, serializer)


_configured: weakref.WeakKeyDictionary[CacheStore, Codec] = weakref.WeakKeyDictionary()


def configured_codec(store: CacheStore) -> Codec:
    """The serializer the store's settings name (``cache.serializer``), once per store."""
    found = _configured.get(store)
    if found is None:
        found = _configured[store] = codec(store.settings.serializer)
        if found.name == "pickle":
            logger.warning(PICKLE_WARNING, "The cache.serializer setting")
    return found
