"""Masking of secrets: values replaced by ``***`` in task logs, the UI and the API.

Two rules, as in Airflow:

* **By name.** A Variable, a Connection extra field, a rendered field or a dict key whose
  name looks sensitive (contains one of :data:`SENSITIVE_WORDS`, case-insensitive, with
  ``-`` read as ``_``) has its value shown as ``***`` by the UI and the API.
* **By value.** Every value registered with :func:`mask_secret` in a process is replaced
  by ``***`` wherever it appears in text that process writes to a try's log (the task
  process wraps its stdout and stderr in :class:`MaskingStream`). Reading a sensitive
  Variable, or a Connection's password or sensitive extras, registers them.

Values shorter than :data:`MIN_LENGTH` characters are not masked by value (masking every
``"1"`` or ``"on"`` in a log would hide more than it protects). Stdlib only.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterable
from typing import Any, TextIO

MASK = "***"
#: A name containing one of these (lowercased, ``-`` as ``_``) holds a secret.
SENSITIVE_WORDS = (
    "access_token", "api_key", "apikey", "authorization", "credential", "passphrase", "passwd",
    "password", "private_key", "secret", "token", "keyfile_dict", "service_account",
)
#: Shorter values are not masked by value.
MIN_LENGTH = 5


def is_sensitive(name: Any) -> bool:
    """Whether a key or field called ``name`` holds a secret (by its name)."""
    if not isinstance(name, str):
        return False
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in SENSITIVE_WORDS)


class SecretsMasker:
    """The set of secret values of this process and the text replacement built from them."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: Any, name: str | None = None) -> None:
        """Register ``secret``: a string, or every string inside a dict/list (with a dict, only under sensitive keys
        unless ``name`` itself is sensitive or absent)."""
        force = is_sensitive(name) or (name is None and not isinstance(secret, dict))
        found = list(_strings(secret, force=force))
        if not found:
            return
        with self._lock:
            before = len(self._secrets)
            for value in found:
                for variant in _variants(value):
                    if len(variant) >= MIN_LENGTH:
                        self._secrets.add(variant)
            if len(self._secrets) != before:
                ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial leftovers
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._secrets)


def _variants(value: str) -> Iterable[str]:
    """The secret and its forms that show up in logs: as is, and as a URL-quoted string."""
    from urllib.parse import quote

    yield value
    yield value.strip()
    quoted = quote(value, safe="")
    if quoted != value:
        yield quoted


def _strings(value: Any, *, force: bool) -> Iterable[str]:
    if isinstance(value, str):
        if force:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, force=force or is_sensitive(key))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item, force=force)
    elif force and isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


#: The masker of this process.
MASKER = SecretsMasker()


def mask_secret(secret: Any, name: str | None = None) -> None:
    """Mask ``secret`` in this try's log from now on (task code: ``from scheduler import mask_secret``).

    A dict is masked under its sensitive keys only, unless ``name`` is given and sensitive.
    """
    MASKER.add(secret, name)


def redact(text: str) -> str:
    """``text`` with this process's registered secrets replaced by ``***``."""
    return MASKER.redact(text)


def redact_value(value: Any, name: str | None = None) -> Any:
    """A structure as shown in the UI and the API: values under sensitive names (``name`` or dict keys) become
    ``***``, and registered secrets are masked in every string."""
    if name is not None and is_sensitive(name) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return MASKER.redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class MaskingStream(io.TextIOBase):
    """A text stream that masks secrets line by line before writing to ``target`` (a try's log).

    Text is held until the end of its line (or a flush), so a secret written in pieces is
    still masked when the pieces arrive before the newline.
    """

    def __init__(self, target: TextIO, masker: SecretsMasker = MASKER) -> None:
        super().__init__()
        self.target = target
        self.masker = masker
        self._pending = ""
        self._lock = threading.RLock()

    @classmethod
    def over(cls, target: TextIO, masker: SecretsMasker = MASKER) -> TextIO:
        """A masking stream over ``target``, typed as the TextIO it stands in for (``sys.stdout = ...``)."""
        return cls(target, masker)  # type: ignore[return-value]

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            data = self._pending + text
            cut = data.rfind("\n") + 1
            self._pending = data[cut:]
            if cut:
                self.target.write(self.masker.redact(data[:cut]))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.target.write(self.masker.redact(self._pending))
                self._pending = ""
            self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.target, "errors", None)

    @property
    def buffer(self) -> Any:
        """The raw stream below (what writes bytes uses); bytes written there are not masked."""
        return getattr(self.target, "buffer", None)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.flush()
        super().close()
