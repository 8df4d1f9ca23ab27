"""Users: create, find, delete, check passwords. Passwords are stored as scrypt hashes, never in clear.

Hash format: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` (hashlib.scrypt, 16-byte salt,
64-byte key), so parameters can change later without breaking stored hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from scheduler.clock import utcnow
from scheduler.db.models import User
from scheduler.exceptions import UpdraftError
from webserver.auth import ROLES

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8


class UserError(UpdraftError):
    """A user cannot be created or changed as asked (the message says why)."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=64)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(key)
        actual = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def create_user(
    session: Session, *, username: str, password: str, role: str, email: str | None = None,
    first_name: str = "", last_name: str = "",
) -> User:
    """Add a user; UserError for an empty or taken username, a short password or an unknown role."""
    username = (username or "").strip()
    if not username:
        raise UserError("username must not be empty")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if find_user(session, username) is not None:
        raise UserError(f"user {username!r} already exists")
    user = User(
        username=username, email=email, first_name=first_name, last_name=last_name,
        password_hash=hash_password(password), role=role, active=True, created=utcnow(), failed_login_count=0,
    )
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def delete_user(session: Session, username: str) -> None:
    """Remove a user; UserError when there is no such user."""
    if find_user(session, username) is None:
        raise UserError(f"user {username!r} does not exist")
    session.execute(delete(User).where(User.username == username))


#: Credentials verified recently in this process: (username, keyed digest of the password) ->
#: (the password hash they matched, when the entry expires). scrypt costs ~30 ms by design; an API
#: client sends its basic-auth credentials with every request, so each would pay it again.
_VERIFIED: dict[tuple[str, bytes], tuple[str, float]] = {}
#: The digests are keyed with a random per-process secret: the cache never holds a usable password.
_VERIFIED_KEY = secrets.token_bytes(32)
VERIFIED_TTL_SECONDS = 60.0
_VERIFIED_LIMIT = 1024


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None (the same answer for a wrong name or password).

    A successful check is remembered for VERIFIED_TTL_SECONDS in this process, for exactly
    these credentials and only while the user's stored hash is unchanged (a new password,
    or a deleted or deactivated user, is noticed at once). Failures are never remembered.
    """
    user = find_user(session, username)
    if user is None or not user.active:
        hash_password(password)  # as slow as a real check, so timing does not tell names apart
        return None
    digest = hmac.new(_VERIFIED_KEY, password.encode(), hashlib.sha256).digest()
    now = time.monotonic()
    remembered = _VERIFIED.get((username, digest))
    if remembered is not None and remembered[1] > now and hmac.compare_digest(remembered[0], user.password_hash):
        return user
    if not check_password(password, user.password_hash):
        return None
    if len(_VERIFIED) >= _VERIFIED_LIMIT:
        _VERIFIED.clear()
    _VERIFIED[(username, digest)] = (user.password_hash, now + VERIFIED_TTL_SECONDS)
    return user


def random_password() -> str:
    """A generated password (about 130 bits, URL-safe characters)."""
    return secrets.token_urlsafe(16)


def record_login_success(session: Session, user_id: int) -> None:
    """Note a successful session login: last_login now, failed_login_count back to 0."""
    session.execute(update(User).where(User.id == user_id).values(last_login=utcnow(), failed_login_count=0))


def record_login_failure(session: Session, username: str) -> None:
    """Count a failed login against the named user, if there is one (an audit figure; throttling is in memory)."""
    session.execute(
        update(User).where(User.username == username).values(failed_login_count=User.failed_login_count + 1)
    )


def reset_failed_logins(session: Session, user_id: int) -> None:
    session.execute(
        update(User).where(User.id == user_id, User.failed_login_count != 0).values(failed_login_count=0)
    )
