"""Circuit breakers on Redis: one script call per operation (``lua/breaker_*.lua``), each
touching one breaker's three keys under its ``{hash tag}`` and announcing its transitions."""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.backends.breaker_state import BreakerConfig, BreakerView
from toolkit.backends.redis._core import RedisCore


class RedisBreakers(RedisCore):
    """A state hash, a window hash and a sorted set of probes per breaker."""

    def _init_breakers(self) -> None:
        self._breaker_scripts = {
            op: self._script(f"breaker_{op}") for op in ("record", "probe", "release", "force")
        }

    def _breaker_keys(self, name: str) -> list[str]:
        # One {hash tag} per breaker: its scripts touch all three keys, on one cluster slot.
        tag = "{breaker:" + name + "}"
        return [self.key(tag, "state"), self.key(tag, "window"), self.key(tag, "probes")]

    async def _breaker_script(
        self, operation: str, script: str, name: str, args: Sequence[str | int | float]
    ) -> BreakerView:
        keys = self._breaker_keys(name)
        call = self._breaker_scripts[script]
        reply = await self.call(operation, lambda: call(keys=keys, args=list(args)))
        return BreakerView.from_reply(reply)

    async def breaker_record(
        self,
        name: str,
        now_ms: int,
        successes: int,
        failures: int,
        slow: int,
        trip: bool,
        config: BreakerConfig,
    ) -> BreakerView:
        args: list[str | int | float] = [now_ms, successes, failures, slow, int(trip)]
        args += [self.key(config.channel), name]
        return await self._breaker_script("breaker.record", "record", name, [*args, *config.args()])

    async def breaker_acquire_probe(
        self, name: str, now_ms: int, token: str, config: BreakerConfig
    ) -> BreakerView:
        args = [now_ms, token, self.key(config.channel), name, *config.args()]
        return await self._breaker_script("breaker.probe", "probe", name, args)

    async def breaker_release_probe(
        self,
        name: str,
        now_ms: int,
        token: str,
        generation: int,
        outcome: str,
        config: BreakerConfig,
    ) -> BreakerView:
        args: list[str | int | float] = [now_ms, token, generation, outcome]
        args += [self.key(config.channel), name]
        return await self._breaker_script(
            "breaker.release", "release", name, [*args, *config.args()]
        )

    async def breaker_force(self, name: str, forced: str, *, channel: str) -> BreakerView:
        args = [forced, self.key(channel), name]
        return await self._breaker_script("breaker.force", "force", name, args)

    async def breaker_read(self, name: str) -> BreakerView:
        key = self._breaker_keys(name)[0]
        fields = ("state", "until", "gen", "forced")
        stored = await self.call("breaker.read", lambda: self._client.hmget(key, fields))
        state, until, gen, forced = (None if v is None else v.decode() for v in stored)
        return BreakerView(state or "closed", int(until or 0), int(gen or 0), forced or "")
