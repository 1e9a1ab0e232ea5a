"""Who an admin request is: the name of the token its credentials carry, and its role."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from toolkit.admin._http import Problem

REALM = "agent-server-toolkit"
"""The realm of the Basic challenge (browsers show it when they prompt)."""


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"www-authenticate": f'Basic realm="{REALM}"'})


def _digest(value: str) -> bytes:
    # compare_digest is constant time only for inputs of one length: compare fixed-size
    # hashes, so that neither a token's length nor a guess's shows in the timing.
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True, slots=True)
class Admin:
    """Whose token a request carries: its ``name``, and whether it may change anything (an
    ``admin.tokens`` token) or only read (an ``admin.read_tokens`` one)."""

    name: str
    writes: bool


class Tokens:
    """The configured tokens, and who a request's credentials name: HTTP Basic
    (``name:token``, which browsers prompt for and resend) or ``Bearer <token>``."""

    def __init__(
        self,
        tokens: Mapping[str, SecretStr],
        read_tokens: Mapping[str, SecretStr] | None = None,
    ) -> None:
        roles = [(tokens, True), (read_tokens or {}, False)]
        self._known = [
            (Admin(name, writes), _digest(name), _digest(token.get_secret_value()))
            for given, writes in roles
            for name, token in given.items()
        ]

    def identify(self, authorization: str | None) -> Admin:
        """Whose token ``authorization`` carries.

        Raises:
            Problem: 401 when the credentials are missing or malformed, 403 when wrong.
        """
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        given_name: bytes | None = None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 inside
                raise _unauthorized("Basic credentials are not base64 of 'name:token'") from None
            name, colon, token = decoded.partition(":")
            if not colon:
                raise _unauthorized("Basic credentials are not base64 of 'name:token'")
            given_name = _digest(name)
        elif scheme == "bearer" and credentials:
            token = credentials
        else:
            raise _unauthorized("send 'Authorization: Basic' (name:token) or 'Bearer <token>'")
        given_token = _digest(token)
        found: Admin | None = None
        # Every token is compared, with no early exit, so the time taken does not tell
        # whether a name exists, which entry matched, or its role.
        for admin, name_digest, token_digest in self._known:
            token_ok = hmac.compare_digest(token_digest, given_token)
            name_ok = given_name is None or hmac.compare_digest(name_digest, given_name)
            if token_ok & name_ok and found is None:
                found = admin
        if found is None:
            raise Problem(403, "these credentials do not match any admin token")
        return found
