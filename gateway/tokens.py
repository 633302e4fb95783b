"""Bearer tokens: who a request comes from.

Tokens are JWTs verified by PyJWT with one configured key and one configured
algorithm: an HS256 secret, an RS256/ES256 public key, or a JWKS (the key picked
by the token's ``kid``). A token must carry ``exp``, ``sub`` and the tenant claim;
``aud`` and ``iss`` are checked when configured. Only the configured algorithm is
accepted, so ``alg: none`` and algorithm confusion (an HS256 token "signed" with
the RSA public key) are rejected by construction."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from fastapi import HTTPException, Request

from gateway.caller import SCOPES, Caller, Identify

TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # fullmatch: no trailing newline
# A subject is printable: no control character (NUL included) and no lone surrogate.
SUBJECT = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]{1,256}")
MAX_SUBJECT = 256
MAX_TOKEN = 8192
QUERY_PARAMETER = "access_token"


class InvalidToken(Exception):
    """The token cannot be accepted; the message says why."""


@dataclass(frozen=True)
class TokenPolicy:
    """How tokens are verified. ``keys`` maps a key id to a verification key (a
    secret string, or a key object from a PEM or JWKS); the id ``""`` is the key
    used when the token names none."""

    algorithm: str
    keys: Mapping[str, Any]
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 0.0
    tenant_claim: str = "tenant"
    known_scopes: frozenset[str] = field(default_factory=lambda: frozenset(SCOPES))
    max_lifetime_s: float = 0.0  # the longest exp - iat (exp - now without iat); 0: any


class TokenVerifier:
    """Verifies tokens, and remembers the ones it verified (at most ``remembered``)
    until they expire: a client sends the same token with every request, and its
    signature need not be checked again for each of them."""

    def __init__(self, policy: TokenPolicy, *, remembered: int = 4096) -> None:
        if not policy.keys:
            raise ValueError("a token policy needs at least one key")
        self.policy = policy
        self.remembered = remembered
        self._verified: dict[str, tuple[Caller, float, float]] = {}  # token -> caller, window

    def verify(self, token: str) -> Caller:
        """The caller a token names, or InvalidToken."""
        known = self._verified.get(token)
        if known is not None:
            caller, not_before, expires = known
            if not_before <= time.time() < expires:
                return caller
            self._verified.pop(token, None)  # expired: verified again, and refused
        caller, claims = self._verify(token)
        if len(self._verified) >= self.remembered:
            self._verified.clear()
        leeway = self.policy.leeway_s
        self._verified[token] = (
            caller,
            float(claims.get("nbf", 0)) - leeway,
            float(claims["exp"]) + leeway,
        )
        return caller

    def _verify(self, token: str) -> tuple[Caller, dict[str, Any]]:
        p = self.policy
        if len(token) > MAX_TOKEN:
            raise InvalidToken(f"token longer than {MAX_TOKEN} characters")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                key=self._key(header),
                algorithms=[p.algorithm],
                audience=p.audience,
                issuer=p.issuer,
                leeway=p.leeway_s,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": p.audience is not None,
                    "verify_iss": p.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"only {p.algorithm} tokens are accepted") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("signature does not verify") from None
        except jwt.PyJWTError as exc:
            # PyJWT's messages may quote the token's own header (crit values): only a
            # printable ASCII message, bounded, reaches the answer and its challenge.
            raise InvalidToken(_printable(str(exc)) or type(exc).__name__) from None
        self._check_times(claims)
        return self._caller(claims), claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        """``exp``, ``iat`` and ``nbf`` are numbers (PyJWT takes "123" too), and the
        token lives no longer than the policy allows."""
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidToken(f"{name} must be a number")
        limit = self.policy.max_lifetime_s
        if limit:
            issued = claims.get("iat", time.time())
            if claims["exp"] - issued > limit + self.policy.leeway_s:
                raise InvalidToken(f"token lives longer than {limit:.0f} s")

    def _key(self, header: dict[str, Any]) -> Any:
        if header.get("alg") != self.policy.algorithm:
            raise jwt.InvalidAlgorithmError
        kid = header.get("kid")
        keys = self.policy.keys
        if "" in keys:
            # One configured key (a secret or a PEM file): identity providers name it
            # in every token's kid, and there is nothing to choose between.
            return keys[""]
        if isinstance(kid, str) and kid in keys:
            return keys[kid]
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        raise InvalidToken("no key for this token's kid")

    def _caller(self, claims: dict[str, Any]) -> Caller:
        subject = claims["sub"]
        if not isinstance(subject, str) or not SUBJECT.fullmatch(subject):
            raise InvalidToken(
                f"sub must be 1 to {MAX_SUBJECT} printable characters (no control characters)"
            )
        tenant = claims.get(self.policy.tenant_claim)
        if not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
            raise InvalidToken(f"the {self.policy.tenant_claim!r} claim is missing or malformed")
        return Caller(
            subject=subject,
            tenant=tenant,
            scopes=scopes_of(claims) & self.policy.known_scopes,
        )


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """OAuth's space-separated ``scope`` string, or a list of scopes."""
    scope = claims.get("scope", "")
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(s for s in scope if isinstance(s, str))
    return frozenset()


def mint(
    secret: str,
    *,
    tenant: str,
    subject: str,
    scopes: Iterable[str],
    ttl_s: float = 3600,
    algorithm: str = "HS256",
    tenant_claim: str = "tenant",
    **claims: Any,
) -> str:
    """A token signed with ``secret`` (for development, the demo and tests)."""
    now = int(time.time())
    payload = {
        "sub": subject,
        tenant_claim: tenant,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + int(ttl_s),
        **claims,
    }
    return jwt.encode(payload, secret, algorithm=algorithm)


def bearer_identify(verifier: TokenVerifier) -> Identify:
    """``identify`` for the gateway: the token from ``Authorization: Bearer``, or, on
    GET only, from the ``access_token`` query parameter (a browser's EventSource
    cannot send headers). 401 with ``WWW-Authenticate`` and the reason otherwise."""

    def identify(request: Request) -> Caller:
        token = token_of(request)
        if token is None:
            raise unauthorized("missing bearer token", error=None)
        try:
            return verifier.verify(token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None

    return identify


def token_of(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if request.method == "GET":
        return request.query_params.get(QUERY_PARAMETER) or None
    return None


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c for c in text if " " <= c <= "~")[:limit]


def unauthorized(reason: str, error: str | None = "invalid_token") -> HTTPException:
    challenge = 'Bearer realm="jobledger"'
    if error:
        # RFC 6750: error_description is printable ASCII without '"' and '\\'.
        description = _printable(reason).replace("\\", "").replace('"', "'")
        challenge += f', error="{error}", error_description="{description}"'
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": challenge})
