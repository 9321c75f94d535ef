"""The development issuer: a key pair and a JWKS on local disk, for ``make run`` and tests.

A lender's identity provider issues the APIs' tokens in production
(``PREQUAL_AUTH_JWKS_URL``, https, required there). On a developer's machine there is
none, so the first process that needs one makes an RSA key pair under
``PREQUAL_AUTH_DEV_DIR`` (``.infra/auth``): the private key (mode 0600) signs tokens for
``prequal-ops token``, and ``jwks.json`` beside it is what the APIs read instead of the
identity provider's JWKS URL.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from runtime.settings import Environment, Settings

KEY_FILE = "issuer-key.pem"
JWKS_FILE = "jwks.json"


class DevelopmentIssuerRefused(RuntimeError):
    """The development issuer was asked for in production."""


def development_jwks(settings: Settings) -> Path:
    """The development issuer's JWKS file, made if missing.

    Raises :class:`DevelopmentIssuerRefused` in production (the settings already refuse
    an empty ``PREQUAL_AUTH_JWKS_URL`` there; this is the second lock on the door).
    """
    return ensure_keys(settings) / JWKS_FILE


def ensure_keys(settings: Settings) -> Path:
    """The development issuer's directory, with a key pair and JWKS made if missing."""
    if settings.environment is Environment.PRODUCTION:
        raise DevelopmentIssuerRefused("the development issuer does not run in production")
    directory = Path(settings.auth_dev_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        # Two processes starting at once must not make two different key pairs.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / KEY_FILE).exists():
            write_keys(directory, [rsa.generate_private_key(public_exponent=65537, key_size=2048)])
    return directory


def write_keys(directory: Path, keys: Iterable[rsa.RSAPrivateKey]) -> None:
    """Make ``keys`` the issuer's: the first signs, all are published in the JWKS.

    Publishing an old key beside a new one is how a rotation keeps earlier tokens valid.
    """
    keys = list(keys)
    signing = keys[0].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwks = {"keys": [public_jwk(key) for key in keys]}
    _atomic_write(directory / KEY_FILE, signing, mode=0o600)
    _atomic_write(directory / JWKS_FILE, json.dumps(jwks, indent=2).encode(), mode=0o644)


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The public half of ``key`` as a JWK, its ``kid`` the RFC 7638 thumbprint."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    canonical = json.dumps(
        {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    thumbprint = jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest())
    return {**jwk, "kid": thumbprint.decode(), "alg": "RS256", "use": "sig"}


def signing_key(settings: Settings) -> tuple[rsa.RSAPrivateKey, str]:
    """The issuer's current private key and its ``kid``."""
    directory = ensure_keys(settings)
    key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{directory / KEY_FILE} is not an RSA key")
    return key, public_jwk(key)["kid"]


def access_claims(
    settings: Settings, client_id: str, scopes: Iterable[str], ttl_s: int = 3600
) -> dict[str, Any]:
    """The claims of a client-credentials access token for ``client_id`` with ``scopes``."""
    now = int(time.time())
    return {
        "iss": settings.auth_issuer,
        "aud": settings.auth_audience,
        "sub": client_id,
        "azp": client_id,
        "scope": " ".join(sorted(set(scopes))),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
    }


def issue_token(
    settings: Settings, client_id: str, scopes: Iterable[str], ttl_s: int = 3600
) -> str:
    """A client-credentials access token for ``client_id`` with ``scopes``, RS256-signed."""
    key, kid = signing_key(settings)
    claims = access_claims(settings, client_id, scopes, ttl_s)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
