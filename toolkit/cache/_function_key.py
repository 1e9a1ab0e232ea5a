"""What selects a ``@cached`` function's entry: the key material of a call (its bound
arguments in canonical JSON, or what ``key=`` returns), the caller when ``per_caller``, its
tags, and the key made of them.

A call whose arguments cannot be keyed, or whose ``key=`` or ``tags=`` function fails, goes
straight to the function (``bypass``), logged once per function: never a key that could meet
another call's entry.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from toolkit.cache._arguments import method_receiver, tag_problem
from toolkit.cache._codec import Codec
from toolkit.cache._keys import KEY_DIGEST_BYTES, canonical_json

logger = logging.getLogger("toolkit.cache")

_POSITIONAL_OR_KEYWORD: Final = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD_ONLY: Final = inspect.Parameter.KEYWORD_ONLY
_EMPTY: Final = inspect.Parameter.empty


class FunctionKey:
    """The keys and tags of one decorated function's calls, prepared at decoration.

    Args:
        function: the decorated function.
        qualname: its name in keys and warnings.
        prefix: the start of every key (``{namespace}:{qualname}:``).
        key: ``key=``, or None for the bound arguments.
        tags: fixed tags (when ``tag_function`` is None).
        tag_function: ``tags=`` as a function of the arguments.
        per_caller: whether a call's caller is part of its key material.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        qualname: str,
        prefix: str,
        key: Callable[..., object] | None,
        tags: tuple[str, ...],
        tag_function: Callable[..., Iterable[str]] | None,
        per_caller: bool,
    ) -> None:
        self.qualname = qualname
        self.prefix = prefix
        self.key_fn = key
        self.tags = tags
        self.tag_fn = tag_function
        self.per_caller = per_caller
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters.values())
        self.receiver = method_receiver(parameters)
        # Signature.bind costs more than the rest of a hit together; for the usual signatures
        # (named parameters only) the arguments are matched here, and bind is the fallback.
        simple = all(p.kind in (_POSITIONAL_OR_KEYWORD, _KEYWORD_ONLY) for p in parameters)
        self.positional = (
            tuple(p.name for p in parameters if p.kind is _POSITIONAL_OR_KEYWORD)
            if simple
            else None
        )
        self.names = frozenset(p.name for p in parameters)
        self.defaults = {p.name: p.default for p in parameters if p.default is not _EMPTY}
        self.warned_key = False
        self.warned_tags = False

    def entry(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str | None
    ) -> tuple[bytes, tuple[str, ...]] | None:
        """The key material (the caller's identity included) and the tags of this call, or
        None to bypass the cache."""
        if self.per_caller and caller is None:
            return None  # the identity function failed: never share an entry by accident
        material = self._material(args, kwargs)
        if material is None:
            return None
        tags = self.tags if self.tag_fn is None else self._computed_tags(self.tag_fn, args, kwargs)
        if tags is None:
            return None
        if caller is not None:
            material += b"\x00" + caller.encode("utf-8", "surrogatepass")
        return material, tags

    def key(self, codec: Codec, material: bytes) -> str:
        """The storage key of ``material`` stored with ``codec``."""
        # The serializer is part of the hash: entries written by another serializer (another
        # deployment, a changed setting) are never read as this one's.
        digest = hashlib.blake2b(codec.name.encode(), digest_size=KEY_DIGEST_BYTES)
        digest.update(b"\x00")
        digest.update(material)
        return self.prefix + digest.hexdigest()

    def _computed_tags(
        self,
        tag_fn: Callable[..., Iterable[str]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, ...] | None:
        try:
            computed = tag_fn(*args, **kwargs)
            tags = list(computed) if not isinstance(computed, str | bytes) else computed
        except Exception as exc:
            self._warn_tags(f"tags= raised {type(exc).__name__}: {exc}")
            return None
        problem = tag_problem(tags)
        if problem is not None:
            self._warn_tags(f"tags= returned {tags!r:.200}: {problem}")
            return None
        return tuple(tags)

    def _material(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        """The canonical bytes that select the result, or None to bypass the cache."""
        if self.key_fn is not None:
            try:
                chosen = self.key_fn(*args, **kwargs)
            except Exception as exc:
                self._warn_key(f"key= raised {type(exc).__name__}: {exc}")
                return None
            try:
                return canonical_json(chosen)
            except (TypeError, ValueError):
                self._warn_key(
                    f"key= returned a {type(chosen).__name__}, which is not JSON (str, int, "
                    "float, bool, None, lists and dicts of them)"
                )
                return None
        arguments = self._arguments(args, kwargs)
        if arguments is None:
            return None  # a wrong call: the function raises the TypeError itself
        if self.receiver is not None:
            del arguments[self.receiver]
        try:
            return canonical_json(arguments)
        except (TypeError, ValueError):
            if not self.warned_key:
                self._warn_key(self._explain(arguments))
            return None

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """Parameter name -> value, defaults applied (the order is irrelevant: the canonical
        JSON sorts it); None for a call the function would refuse."""
        positional = self.positional
        if positional is not None and len(args) <= len(positional):
            arguments = {**self.defaults, **dict(zip(positional, args, strict=False))}
            for name, value in kwargs.items():
                if name not in self.names or name in positional[: len(args)]:
                    break  # unknown or given twice: let bind() decide
                arguments[name] = value
            else:
                if len(arguments) == len(self.names):
                    return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _explain(self, arguments: dict[str, Any]) -> str:
        keyable, offending = [], []
        for name, value in arguments.items():
            try:
                canonical_json(value)
            except (TypeError, ValueError):
                offending.append(f"{name!r} ({type(value).__name__})")
            else:
                keyable.append(name)
        parameters = [
            p.replace(annotation=inspect.Parameter.empty)
            for p in self.signature.parameters.values()
        ]
        accepted = str(
            self.signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
        )[1:-1]
        body = keyable[0] if len(keyable) == 1 else f"[{', '.join(keyable)}]"
        return (
            f"argument {', '.join(offending)} cannot be part of a cache key (not JSON: str, "
            f"int, float, bool, None, lists and dicts of them). Choose the key material: "
            f"@cached(..., key=lambda {accepted}: {body})"
        )

    def _warn_key(self, reason: str) -> None:
        if not self.warned_key:
            self.warned_key = True
            logger.warning(
                "@cached %s: %s; until then its calls go straight to the function "
                "(toolkit.cache.requests result=bypass)",
                self.qualname,
                reason,
            )

    def _warn_tags(self, reason: str) -> None:
        if not self.warned_tags:
            self.warned_tags = True
            logger.warning(
                "@cached %s: %s; such calls go straight to the function "
                "(toolkit.cache.requests result=bypass)",
                self.qualname,
                reason,
            )
