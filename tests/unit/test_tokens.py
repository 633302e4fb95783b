"""Token verification: what is accepted, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.caller import ADMIN, READ, WRITE, Caller
from gateway.tokens import InvalidToken, TokenPolicy, TokenVerifier, mint, unauthorized
from infra import auth
from infra.errors import ConfigurationError
from infra.settings import DEV_AUTH_SECRET, AuthSettings

SECRET = "unit-test-secret-0123456789abcdef0123"


def hs256(**policy: Any) -> TokenVerifier:
    return TokenVerifier(TokenPolicy(algorithm="HS256", keys={"": SECRET}, **policy))


def token(**overrides: Any) -> str:
    claims: dict[str, Any] = {
        "sub": "alice",
        "tenant": "acme",
        "scope": "jobs:read jobs:write",
        "exp": int(time.time()) + 60,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[Any, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refusal(verifier: TokenVerifier, text: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(text)
    return str(refused.value)


def test_a_valid_token_names_the_caller_its_tenant_and_its_scopes() -> None:
    assert hs256().verify(token()) == Caller("alice", "acme", frozenset({READ, WRITE}))


def test_scopes_may_be_a_list_and_unknown_scopes_are_dropped() -> None:
    caller = hs256().verify(token(scope=[ADMIN, "jobs:everything", 7]))
    assert caller.scopes == frozenset({ADMIN})
    assert hs256().verify(token(scope=None)).scopes == frozenset()


def test_an_expired_token_is_refused_beyond_the_leeway() -> None:
    assert refusal(hs256(), token(exp=int(time.time()) - 5)) == "token expired"
    assert hs256(leeway_s=30).verify(token(exp=int(time.time()) - 5)).subject == "alice"


def test_a_token_without_exp_sub_or_tenant_is_refused() -> None:
    assert "exp" in refusal(hs256(), token(exp=None))
    assert "sub" in refusal(hs256(), token(sub=None))
    assert "tenant" in refusal(hs256(), token(tenant=None))
    assert "tenant" in refusal(hs256(), token(tenant="a\nb"))
    assert "sub" in refusal(hs256(), token(sub="x" * 300))


def test_a_tampered_payload_fails_its_signature() -> None:
    header, _, signature = token().split(".")
    forged = _b64({"sub": "alice", "tenant": "other", "scope": ADMIN, "exp": 9999999999})
    assert refusal(hs256(), f"{header}.{forged}.{signature}") == "signature does not verify"


def test_a_token_signed_with_another_key_is_refused() -> None:
    other = jwt.encode(
        {"sub": "a", "tenant": "acme", "exp": int(time.time()) + 60},
        "some-other-secret-0123456789abcdef",
        "HS256",
    )
    assert refusal(hs256(), other) == "signature does not verify"


def test_alg_none_is_refused() -> None:
    claims = {"sub": "alice", "tenant": "acme", "scope": ADMIN, "exp": int(time.time()) + 60}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert refusal(hs256(), unsigned) == "only HS256 tokens are accepted"
    assert "only HS256" in refusal(hs256(), jwt.encode(claims, None, algorithm="none"))


def test_an_hs256_token_signed_with_the_rsa_public_key_is_refused(
    rsa_pem: tuple[Any, bytes],
) -> None:
    private, public = rsa_pem
    verifier = TokenVerifier(
        TokenPolicy(algorithm="RS256", keys={"": serialization.load_pem_public_key(public)})
    )
    claims = {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 60}
    assert verifier.verify(jwt.encode(claims, private, "RS256")).tenant == "acme"
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64(claims)
    mac = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert refusal(verifier, confused) == "only RS256 tokens are accepted"


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = hs256(audience="jobledger", issuer="https://id.example")
    good = token(aud="jobledger", iss="https://id.example")
    assert verifier.verify(good).subject == "alice"
    assert "aud" in refusal(verifier, token(iss="https://id.example"))
    assert "Audience" in refusal(verifier, token(aud="other", iss="https://id.example"))
    assert "issuer" in refusal(verifier, token(aud="jobledger", iss="https://evil.example"))
    assert hs256().verify(token(aud="anything")).subject == "alice"  # not configured


def test_garbage_is_refused_with_a_reason() -> None:
    assert refusal(hs256(), "not-a-jwt")
    assert "longer than" in refusal(hs256(), "a" * 9000)


def test_a_jwks_file_picks_the_key_by_kid(tmp_path: Path, rsa_pem: tuple[Any, bytes]) -> None:
    private, public = rsa_pem
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(serialization.load_pem_public_key(public)))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    verifier = auth.token_verifier(AuthSettings(algorithm="RS256", jwks_file=jwks))
    claims = {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 60}
    signed = jwt.encode(claims, private, "RS256", headers={"kid": "k1"})
    assert verifier.verify(signed).subject == "alice"
    unknown = jwt.encode(claims, private, "RS256", headers={"kid": "k2"})
    assert refusal(verifier, unknown) == "no key for this token's kid"


def test_a_public_key_file_verifies_rs256(tmp_path: Path, rsa_pem: tuple[Any, bytes]) -> None:
    private, public = rsa_pem
    pem = tmp_path / "public.pem"
    pem.write_bytes(public)
    verifier = auth.token_verifier(AuthSettings(algorithm="RS256", public_key_file=pem))
    claims = {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 60}
    assert verifier.verify(jwt.encode(claims, private, "RS256")).tenant == "acme"
    # Identity providers name their key in every token: one configured key serves any kid.
    named = jwt.encode(claims, private, "RS256", headers={"kid": "idp-key-1"})
    assert verifier.verify(named).tenant == "acme"
    with pytest.raises(ConfigurationError, match="needs"):
        auth.token_verifier(AuthSettings(algorithm="RS256"))
    with pytest.raises(ConfigurationError, match="only with an HS secret"):
        auth.signing_secret(AuthSettings(algorithm="RS256", public_key_file=pem))


def test_a_refusal_never_echoes_unprintable_text_from_the_token() -> None:
    header = {"alg": "HS256", "typ": "JWT", "crit": ["\u2603\r\nX-Injected: 1"]}
    crafted = jwt.encode(
        {"sub": "a", "tenant": "acme", "exp": int(time.time()) + 60},
        SECRET,
        "HS256",
        headers=header,
    )
    reason = refusal(hs256(), crafted)
    assert "critical extension" in reason
    assert reason.isascii() and "\r" not in reason and "\n" not in reason
    challenge = unauthorized(reason).headers["WWW-Authenticate"]  # type: ignore[index]
    challenge.encode("latin-1")
    assert "\r" not in challenge and "\n" not in challenge


def test_production_refuses_the_development_key() -> None:
    dev_key = AuthSettings(environment="production", secret=DEV_AUTH_SECRET)
    with pytest.raises(ConfigurationError, match="development key"):
        auth.token_verifier(dev_key)
    with pytest.raises(ConfigurationError, match="development key"):
        auth.mint_token(dev_key, tenant="t", subject="s", scopes=[READ], ttl_s=60)
    own = AuthSettings(environment="production", secret=SECRET)
    minted = auth.mint_token(own, tenant="acme", subject="ops", scopes=[READ], ttl_s=60)
    assert auth.token_verifier(own).verify(minted).subject == "ops"


def test_with_no_key_configured_nothing_verifies_unless_in_development_on_loopback() -> None:
    """Fail closed: the public development key was accepted for any tenant whenever
    nothing was configured."""
    with pytest.raises(ConfigurationError, match="no key"):
        auth.token_verifier(AuthSettings())
    development = AuthSettings(environment="development")
    assert auth.token_verifier(development, "127.0.0.1").policy.keys[""] == DEV_AUTH_SECRET
    assert auth.token_verifier(development, "localhost").policy.keys[""] == DEV_AUTH_SECRET
    for beyond in ("0.0.0.0", "10.1.2.3", "gateway.example.com", "::"):
        with pytest.raises(ConfigurationError, match="beyond this machine"):
            auth.token_verifier(development, beyond)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        auth.token_verifier(AuthSettings(secret="short"))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"tenant": "acme\n"}, "tenant"),
        ({"sub": "bob\x00"}, "sub must be"),
        ({"sub": "bob\ud800"}, "sub must be"),
        ({"sub": "line\nbreak"}, "sub must be"),
        ({"exp": "in 60 s, as a string"}, "exp must be a number"),
        ({"iat": "0"}, "iat must be a number"),
        ({"exp": "in 10 days"}, "lives longer"),
    ],
    ids=[
        "tenant-newline",
        "sub-nul",
        "sub-surrogate",
        "sub-control",
        "exp-string",
        "iat-string",
        "lifetime",
    ],
)
def test_claims_that_only_look_valid_are_refused(claims: dict[str, Any], reason: str) -> None:
    verifier = auth.token_verifier(AuthSettings(environment="production", secret=SECRET))
    now = int(time.time())  # now, not when the parameters were collected
    expiries = {"in 60 s, as a string": str(now + 60), "in 10 days": now + 10 * 86400}
    claims = {k: expiries.get(v, v) if isinstance(v, str) else v for k, v in claims.items()}
    token = jwt.encode(
        {
            "sub": "bob",
            "tenant": "acme",
            "scope": READ,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            **claims,
        },
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match=reason):
        verifier.verify(token)


def test_minted_tokens_verify_and_expire() -> None:
    minted = mint(SECRET, tenant="acme", subject="bob", scopes=[READ], ttl_s=60)
    assert hs256().verify(minted) == Caller("bob", "acme", frozenset({READ}))
    expired = mint(SECRET, tenant="acme", subject="bob", scopes=[READ], ttl_s=-60)
    assert refusal(hs256(), expired) == "token expired"


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = hs256()
    short = token(exp=int(time.time()) + 1)
    assert verifier.verify(short).tenant == "acme"
    assert verifier.verify(short).tenant == "acme"  # remembered
    time.sleep(max(0.0, jwt.decode(short, SECRET, "HS256")["exp"] - time.time()) + 0.05)
    with pytest.raises(InvalidToken, match="token expired"):
        verifier.verify(short)


def test_a_token_not_yet_valid_is_not_remembered_and_a_forged_twin_is_refused() -> None:
    verifier = hs256()
    early = token(nbf=int(time.time()) + 60)
    for _ in range(2):
        with pytest.raises(InvalidToken, match="not yet valid"):
            verifier.verify(early)
    good = token()
    verifier.verify(good)
    header, payload, _ = good.split(".")
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(f"{header}.{payload}.{base64.urlsafe_b64encode(b'x' * 32).decode()}")


def test_remembering_is_bounded() -> None:
    verifier = TokenVerifier(TokenPolicy(algorithm="HS256", keys={"": SECRET}), remembered=3)
    for n in range(10):
        verifier.verify(token(sub=f"user-{n}"))
        assert len(verifier._verified) <= 3
