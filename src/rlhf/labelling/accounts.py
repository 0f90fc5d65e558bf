"""Labeller accounts: tokens, passwords and sign-in sessions, stored as hashes only.

A token is 32 random bytes (``secrets``), shown once when the account is made; the database
keeps its SHA-256 (a slow, salted hash adds nothing to a secret with 256 bits of entropy, and
a plain digest can be looked up). A password, chosen by a person, is kept as a salted
PBKDF2-SHA256 hash. Signing in with either gives a session token, also stored as a digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.labelling.db import Labeller, SignIn

PBKDF2_ITERATIONS = 200_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class AuthError(Exception):
    """A wrong or missing token, name or password."""


@dataclass(frozen=True)
class Account:
    """The signed-in labeller as the app sees it."""

    id: int
    name: str
    admin: bool


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${salt.hex()}${key.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, iterations, salt, key = stored.split("$")
    found = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(found.hex(), key)


def add_labeller(
    session: Session, name: str, password: str | None = None, admin: bool = False
) -> str:
    """Create the labeller ``name`` and return their token (the only time it is seen)."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"labeller name {name!r}: use letters, digits, '_', '.', '-' (at most 100)"
        )
    if session.scalar(select(Labeller).where(Labeller.name == name)) is not None:
        raise ValueError(f"labeller {name!r} exists already")
    if password is not None and len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    token = secrets.token_urlsafe(32)
    session.add(
        Labeller(
            name=name,
            token_hash=digest(token),
            password_hash=hash_password(password) if password is not None else None,
            admin=admin,
        )
    )
    session.flush()
    return token


def sign_in(session: Session, name: str, secret: str) -> str:
    """Check ``name`` with its token or password and return a new session token."""
    labeller = session.scalar(select(Labeller).where(Labeller.name == name))
    ok = labeller is not None and (
        hmac.compare_digest(labeller.token_hash, digest(secret))
        or (labeller.password_hash is not None and check_password(secret, labeller.password_hash))
    )
    if not ok or labeller is None:
        raise AuthError("wrong name, token or password")
    token = secrets.token_urlsafe(32)
    session.add(SignIn(token_hash=digest(token), labeller_id=labeller.id))
    return token


def authenticate(session: Session, token: str | None) -> Account:
    """The labeller a bearer token (their own token or a session's) belongs to."""
    if not token:
        raise AuthError("not signed in: send 'Authorization: Bearer <token>'")
    hashed = digest(token)
    labeller = session.scalar(select(Labeller).where(Labeller.token_hash == hashed))
    if labeller is None:
        labeller = session.scalar(
            select(Labeller)
            .join(SignIn, SignIn.labeller_id == Labeller.id)
            .where(SignIn.token_hash == hashed)
        )
    if labeller is None:
        raise AuthError("invalid token: sign in again")
    return Account(labeller.id, labeller.name, labeller.admin)


def labellers(session: Session) -> list[Labeller]:
    return list(session.scalars(select(Labeller).order_by(Labeller.name)))
