"""Builds token verification from the ``auth`` settings, and mints development
tokens. Refuses the well-known development key in production."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.caller import SCOPES
from gateway.tokens import TokenPolicy, TokenVerifier, mint
from infra.errors import ConfigurationError
from infra.settings import DEV_AUTH_SECRET, AuthSettings, Settings

DEV_KEY_REFUSED = (
    "JOBLEDGER_AUTH__ENVIRONMENT is production but the HS256 key is the well-known "
    "development key: set JOBLEDGER_AUTH__SECRET to a secret of your own (32 bytes or more), "
    "or use JOBLEDGER_AUTH__PUBLIC_KEY_FILE / JOBLEDGER_AUTH__JWKS_FILE"
)
NO_KEY = (
    "no key to verify tokens with: set JOBLEDGER_AUTH__SECRET (32 bytes or more, e.g. from "
    "python -c 'import secrets; print(secrets.token_urlsafe(48))'), or "
    "JOBLEDGER_AUTH__PUBLIC_KEY_FILE / JOBLEDGER_AUTH__JWKS_FILE; for development on this "
    "machine, `jobledger run --dev` (JOBLEDGER_AUTH__ENVIRONMENT=development) uses a "
    "well-known development key"
)


def token_verifier(auth: AuthSettings, listening_on: str | None = None) -> TokenVerifier:
    """The verifier the gateway identifies callers with. A gateway listening on
    ``listening_on`` beyond this machine never takes the development key."""
    keys = _keys(auth)
    if keys.get("") == DEV_AUTH_SECRET and listening_on and not _loopback(listening_on):
        raise ConfigurationError(
            f"the gateway listens on {listening_on}, beyond this machine, and the only key "
            f"is the well-known development key: {NO_KEY}"
        )
    return TokenVerifier(
        TokenPolicy(
            algorithm=auth.algorithm,
            keys=keys,
            audience=auth.audience,
            issuer=auth.issuer,
            leeway_s=auth.leeway_s,
            tenant_claim=auth.tenant_claim,
            max_lifetime_s=auth.max_token_lifetime_s,
        )
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keys(auth: AuthSettings) -> dict[str, Any]:
    if auth.jwks_file is not None:
        try:
            keyset = jwt.PyJWKSet.from_dict(json.loads(auth.jwks_file.read_text()))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigurationError(f"cannot read JWKS {auth.jwks_file}: {exc}") from None
        return {k.key_id or "": k.key for k in keyset.keys}
    if auth.public_key_file is not None:
        if auth.algorithm.startswith("HS"):
            raise ConfigurationError(f"{auth.algorithm} takes a secret, not a public key file")
        try:
            return {"": load_pem_public_key(auth.public_key_file.read_bytes())}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read public key {auth.public_key_file}: {exc}"
            ) from None
    if not auth.algorithm.startswith("HS"):
        raise ConfigurationError(
            f"{auth.algorithm} needs JOBLEDGER_AUTH__PUBLIC_KEY_FILE or JOBLEDGER_AUTH__JWKS_FILE"
        )
    if auth.secret is None:
        if auth.environment != "development":
            raise ConfigurationError(NO_KEY)
        return {"": DEV_AUTH_SECRET}
    secret = auth.secret.get_secret_value()
    if auth.environment == "production" and secret == DEV_AUTH_SECRET:
        raise ConfigurationError(DEV_KEY_REFUSED)
    if len(secret.encode()) < 32:
        raise ConfigurationError("JOBLEDGER_AUTH__SECRET must be at least 32 bytes")
    return {"": secret}


def signing_secret(auth: AuthSettings) -> str:
    """The HS256 secret tokens are minted with; refused in production with the dev key."""
    if not auth.algorithm.startswith("HS") or auth.jwks_file or auth.public_key_file:
        raise ConfigurationError(
            "tokens are minted only with an HS secret (JOBLEDGER_AUTH__SECRET), not with a "
            "public key or a JWKS file"
        )
    return str(_keys(auth)[""])


def mint_token(
    auth: AuthSettings, *, tenant: str, subject: str, scopes: list[str], ttl_s: float
) -> str:
    return mint(
        signing_secret(auth),
        tenant=tenant,
        subject=subject,
        scopes=scopes,
        ttl_s=ttl_s,
        algorithm=auth.algorithm,
        tenant_claim=auth.tenant_claim,
    )


def client_token(settings: Settings) -> str | None:
    """What `jobledger submit` and the demo send: JOBLEDGER_TOKEN, else, in
    development, a short-lived token for the development caller."""
    if settings.token is not None:
        return settings.token.get_secret_value()
    if settings.auth.environment != "development" or not settings.auth.algorithm.startswith("HS"):
        return None
    return mint_token(
        settings.auth,
        tenant=settings.gateway.dev_tenant,
        subject=settings.gateway.dev_subject,
        scopes=list(SCOPES),
        ttl_s=3600,
    )
