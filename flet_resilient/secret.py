"""The secret that signs users' client keys, the same in every process.

Explicit (`secret_key=`) or `$FLET_SECRET_KEY` first. With neither, one
secret is generated once per machine and kept in the state directory
(owner-only file), so restarts, extra workers on the machine and `flet run`
hot reloads keep every user's key valid. A store shared by several machines
needs the one secret everywhere: without it, `machine_secret` is refused.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from flet_resilient.stores import default_state_dir

__all__ = ["SECRET_FILE", "MissingSecret", "app_secret"]

logger = logging.getLogger("flet_resilient.secret")

SECRET_FILE = ".secret"
"""The machine secret's file name in the state directory."""


class MissingSecret(ValueError):
    """A shared store without an explicit secret: keys would not match."""


def app_secret(explicit: str | bytes | None, shared_store: bool) -> bytes:
    """The signing secret: explicit, else $FLET_SECRET_KEY, else the machine's."""
    secret = explicit or os.environ.get("FLET_SECRET_KEY")
    if secret:
        return secret.encode() if isinstance(secret, str) else secret
    if shared_store:
        raise MissingSecret(
            "a shared state store (e.g. RedisStore) needs one secret in every "
            "worker: set $FLET_SECRET_KEY or evict_idle(secret_key=...); "
            "otherwise each process signs users' keys differently and their "
            "state is orphaned"
        )
    return machine_secret(default_state_dir() / SECRET_FILE)


_announced: set[Path] = set()


def machine_secret(path: Path) -> bytes:
    """Read the secret at `path`, creating it (mode 0600) if it is missing."""
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        secret = _create(path)
    if path not in _announced:
        _announced.add(path)
        logger.warning(
            "no $FLET_SECRET_KEY: users' keys are signed with the machine secret "
            "in %s (set FLET_SECRET_KEY for several machines)",
            path,
        )
    return secret


def _create(path: Path) -> bytes:
    """Write a new secret privately, then link it in: whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    draft = path.with_name(f"{path.name}.{os.getpid()}.draft")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
    try:
        os.link(draft, path)
    except FileExistsError:  # another worker was first: use theirs
        secret = path.read_bytes()
    finally:
        draft.unlink()
    return secret
