"""Encryption at rest of Variable values and Connection passwords and extras (Fernet, from ``cryptography``).

The key is ``[core] fernet_key`` when set (several keys separated by commas: the first
encrypts, all decrypt, so a key can be rotated); otherwise a key generated once into
``$UPDRAFT_HOME/fernet_key`` (mode 0600), the same way the webserver's secret key is.
A key that is not a valid Fernet key is a :class:`~scheduler.exceptions.ConfigError`
naming the setting or the file.

``cryptography`` is imported on first use, so commands that never touch a secret do not load it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.exceptions import ConfigError, UpdraftError

if TYPE_CHECKING:
    from scheduler.config import Settings

#: The generated key's file, in $UPDRAFT_HOME, when [core] fernet_key is not set.
FERNET_KEY_FILE = "fernet_key"

_lock = threading.Lock()
#: (home, configured key) -> the MultiFernet built from it.
_CACHE: dict[tuple[str, str], Any] = {}
#: The settings set by the process's entry point (webserver, CLI); None: load them from the environment.
_DEFAULT_SETTINGS: Settings | None = None


class DecryptionError(UpdraftError):
    """A stored value could not be decrypted with the configured key(s)."""


def use_settings(settings: Settings) -> None:
    """Make ``settings`` the ones :func:`encrypt` and :func:`decrypt` use when not given any."""
    global _DEFAULT_SETTINGS
    _DEFAULT_SETTINGS = settings


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    if _DEFAULT_SETTINGS is not None:
        return _DEFAULT_SETTINGS
    from scheduler.config import load_settings

    return load_settings()


def generate_key() -> str:
    """A new Fernet key (32 random bytes, URL-safe base64)."""
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _key_file(settings: Settings) -> str:
    """The generated key of $UPDRAFT_HOME, made on first use (written once, linked into place atomically)."""
    from scheduler.config import generated_secret

    return generated_secret(Path(settings.home) / FERNET_KEY_FILE, generate_key, "Fernet key")


def fernet(settings: Settings | None = None) -> Any:
    """The ``MultiFernet`` for these settings (cached per home and configured key)."""
    settings = _settings(settings)
    configured = str(settings.get("core", "fernet_key") or "").strip()
    cache_key = (str(settings.home), configured)
    with _lock:
        cached = _CACHE.get(cache_key)
        if cached is not None:
            return cached
        if configured:
            raw, origin = configured, "[core] fernet_key"
        else:
            raw, origin = _key_file(settings), str(Path(settings.home) / FERNET_KEY_FILE)
        built = _build(raw, origin)
        _CACHE[cache_key] = built
        return built


def _build(raw: str, origin: str) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    keys = []
    for number, part in enumerate((p.strip() for p in raw.split(",")), start=1):
        if not part:
            continue
        try:
            keys.append(Fernet(part.encode()))
        except (ValueError, TypeError):
            which = f"key {number}" if "," in raw else "the key"
            raise ConfigError(
                f"{origin}: {which} is not a valid Fernet key (expected 32 bytes in URL-safe base64, "
                f"44 characters; make one with: python -c \"from cryptography.fernet import Fernet; "
                f"print(Fernet.generate_key().decode())\")"
            ) from None
    if not keys:
        raise ConfigError(f"{origin}: no Fernet key given")
    return MultiFernet(keys)


def encrypt(value: str, settings: Settings | None = None) -> str:
    """``value`` encrypted with the first configured key, as text."""
    return str(fernet(settings).encrypt(value.encode("utf-8")).decode("ascii"))


def decrypt(token: str, settings: Settings | None = None, *, what: str = "a value") -> str:
    """The text ``token`` holds; DecryptionError naming ``what`` when no configured key opens it."""
    from cryptography.fernet import InvalidToken

    cipher = fernet(settings)  # a bad key is a ConfigError, not a value that cannot be decrypted
    try:
        return str(cipher.decrypt(token.encode("ascii")).decode("utf-8"))
    except (InvalidToken, UnicodeError, ValueError):
        raise DecryptionError(
            f"{what} cannot be decrypted with the configured Fernet key: it was encrypted with another key "
            "([core] fernet_key or $UPDRAFT_HOME/fernet_key changed?)"
        ) from None
