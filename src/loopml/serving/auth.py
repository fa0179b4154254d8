"""Admin authentication: a bearer token from an environment variable, compared in constant time."""

from __future__ import annotations

import hmac
import os

from loopml.errors import Unauthorized


class AdminAuth:
    """Checks the token of admin requests (promote, rollback, reload).

    The expected token is read from ``$<token_env>`` when the server starts; without it admin
    actions are disabled rather than open.

    Examples
    --------
    >>> auth = AdminAuth("X_TOKEN", token="s3cret")
    >>> auth.check(b"Bearer s3cret")
    >>> auth.check(b"Bearer nope")
    Traceback (most recent call last):
    ...
    loopml.errors.Unauthorized: admin token rejected (sent in the Authorization header as `Bearer <token>`)
    """

    def __init__(self, token_env: str, token: str | None = None) -> None:
        self.token_env = token_env
        value = token if token is not None else os.environ.get(token_env)
        self._token = value.encode() if value else None

    @property
    def enabled(self) -> bool:
        """Whether a token is configured."""
        return self._token is not None

    def check(self, authorization: bytes | None) -> None:
        """Raise :class:`Unauthorized` unless ``authorization`` is ``Bearer <token>``."""
        if self._token is None:
            raise Unauthorized(
                f"admin actions are disabled: no token configured (set ${self.token_env} before starting the server)"
            )
        if not authorization:
            raise Unauthorized("admin token required (send `Authorization: Bearer <token>`)")
        scheme, _, value = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self._token):
            raise Unauthorized("admin token rejected (sent in the Authorization header as `Bearer <token>`)")
