"""Bearer tokens from environment variables, compared in constant time; each token names its actor."""

from __future__ import annotations

import hmac
import os

from loopml.errors import Unauthorized


class AdminAuth:
    """Checks the token of admin requests (promote, rollback, reload), or of feedback.

    The expected tokens are read from the environment when the server starts; without any,
    the guarded actions are disabled rather than open. Who acts (recorded in the registry's
    history) is the name configured for the token that matched, never what a request body says.

    Parameters
    ----------
    token_env
        Variable holding the main token.
    token
        The main token itself (instead of reading ``$token_env``; tests and embedding).
    actor
        The actor name of the main token.
    more
        More tokens: environment variable → actor name (``deployment.admin_tokens``).
    purpose
        What the token guards (``admin actions``, ``feedback requests``), for the messages.

    Examples
    --------
    >>> auth = AdminAuth("X_TOKEN", token="s3cret", actor="ops")
    >>> auth.check(b"Bearer s3cret")
    'ops'
    >>> auth.check(b"Bearer nope")
    Traceback (most recent call last):
    ...
    loopml.errors.Unauthorized: admin token rejected (sent in the Authorization header as `Bearer <token>`)
    """

    def __init__(self, token_env: str, token: str | None = None, *, actor: str = "admin-api",
                 more: dict[str, str] | None = None, purpose: str = "admin actions") -> None:
        self.token_env = token_env
        self.purpose = purpose
        value = token if token is not None else os.environ.get(token_env)
        self._tokens: list[tuple[bytes, str]] = [(value.encode(), actor)] if value else []
        for env, name in (more or {}).items():
            v = os.environ.get(env)
            if v:
                self._tokens.append((v.encode(), name))

    @property
    def enabled(self) -> bool:
        """Whether a token is configured."""
        return bool(self._tokens)

    def check(self, authorization: bytes | None) -> str:
        """The actor of the token in ``authorization`` (``Bearer <token>``); :class:`Unauthorized` otherwise."""
        what = self.purpose.split()[0]
        if not self._tokens:
            raise Unauthorized(
                f"{self.purpose} are disabled: no token configured (set ${self.token_env} before starting the server)"
            )
        if not authorization:
            raise Unauthorized(f"{what} token required (send `Authorization: Bearer <token>`)")
        scheme, _, value = authorization.strip().partition(b" ")
        value = value.strip()
        actor = None
        for token, name in self._tokens:  # every token is compared: the time does not tell which matched
            if hmac.compare_digest(value, token) and actor is None:
                actor = name
        if scheme.lower() != b"bearer" or actor is None:
            raise Unauthorized(f"{what} token rejected (sent in the Authorization header as `Bearer <token>`)")
        return actor
