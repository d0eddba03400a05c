"""Recognise a returning user by a signed key kept in the client's storage.

Not by IP (mobile IPs change) and not by Flet's session id (gone after
eviction). The key is a random token plus an HMAC of it under the app's
secret, so a user cannot forge or alter one to reach another user's state.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import flet as ft

from flet_resilient.secret import app_secret

__all__ = ["Identity"]

STORAGE_KEY = "flet_resilient.identity"

_KEY_SHAPE = re.compile(r"([A-Za-z0-9_-]+)\.([0-9a-f]{64})")
"""What `mint` produces: a url-safe token, a dot, a SHA-256 hex signature."""


class Identity:
    """Mints, verifies and looks up per-user keys for one app and secret.

    Each `app` has its own entry in the browser's storage and its own MACs,
    so two apps on one origin, even with one secret, never share a key or a
    stored state.
    """

    def __init__(self, secret: str | bytes | None = None, app: str = "") -> None:
        self._secret = app_secret(secret, shared_store=False)
        self.app = app
        self.storage_key = f"{STORAGE_KEY}:{app}" if app else STORAGE_KEY

    def _mac(self, purpose: str, token: str) -> str:
        scope = f"{purpose}:{self.app}" if self.app else purpose
        message = f"{scope}:{token}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def mint(self) -> str:
        """A new signed client key: `<token>.<signature>`."""
        token = secrets.token_urlsafe(32)
        return f"{token}.{self._mac('key', token)}"

    def verify(self, key: object) -> str | None:
        """The token of a genuine key; None if missing, malformed or forged."""
        shape = _KEY_SHAPE.fullmatch(key) if isinstance(key, str) else None
        if shape is None:  # e.g. non-ASCII, which compare_digest refuses to compare
            return None
        token, signature = shape.groups()
        if not hmac.compare_digest(signature, self._mac("key", token)):
            return None
        return token

    def store_key(self, token: str) -> str:
        """Where a token's state is stored (the token itself never is)."""
        return "state:" + self._mac("state", token)

    async def of(self, page: ft.Page) -> str:
        """The user's token, minting and saving a key on the client if needed."""
        prefs = ft.SharedPreferences()
        token = self.verify(await prefs.get(self.storage_key))
        if token is None:
            key = self.mint()
            await prefs.set(self.storage_key, key)
            token = self.verify(key)
            assert token is not None
        return token
