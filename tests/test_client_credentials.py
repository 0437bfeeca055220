"""Client credentials end to end against the emulator: secret, certificate, ready-made assertion;
caching, refresh ahead, tenants and scopes."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from authlayer import ConfigError, EntraAuth, TokenError, get_token, get_token_async
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER

from .conftest import Client, Clock, Profiles


def test_client_secret_token_reaches_the_protected_api(emu: Emulator, cc_profile: str,
                                                        app: Any, client: Client) -> None:
    answer = client.get(f"{emu.api_url}/hello", EntraAuth(cc_profile))
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert claims["appid"] == app.client_id
    assert claims["aud"] == emu.api_resource
    assert claims["tid"] == emu.tenant_id
    assert emu.count("token", grant_type="client_credentials") == 1


def test_cached_token_is_reused(emu: Emulator, cc_profile: str, client: Client) -> None:
    auth = EntraAuth(cc_profile)
    for _ in range(3):
        assert client.get(f"{emu.api_url}/x", auth).status == 200
    first = get_token(cc_profile)
    assert get_token(cc_profile) is first
    assert emu.count("token") == 1
    assert emu.count("api") == 3


def test_get_token_is_the_token_entra_auth_attaches(emu: Emulator, cc_profile: str) -> None:
    token = get_token(cc_profile)
    assert token.token_type == "Bearer"
    claims = jwtlib.decode(token.token)[1]
    # counted from when the request was sent: at most the real expiry, never after it
    assert claims["exp"] - 2 <= token.expires_on <= claims["exp"]
    assert "token=<" in repr(token)
    assert token.token not in repr(token)


def test_get_token_async_shares_the_cache(emu: Emulator, cc_profile: str) -> None:
    import asyncio

    first = asyncio.run(get_token_async(cc_profile))
    assert get_token(cc_profile) == first
    assert emu.count("token") == 1


def test_force_refresh_gets_a_new_token(emu: Emulator, cc_profile: str) -> None:
    first = get_token(cc_profile)
    second = get_token(cc_profile, force_refresh=True)
    assert first.token != second.token
    assert emu.count("token") == 2


def test_secret_can_be_sent_in_the_body(emu: Emulator, cc_profile: str, secret: str) -> None:
    get_token(cc_profile)
    record = emu.requests[-1]
    assert record.form["client_secret"] == secret
    assert record.form["scope"] == emu.api_scope
    assert record.path == f"/{emu.tenant_id}/oauth2/v2.0/token"


def test_wrong_secret_is_a_token_error_with_hint(emu: Emulator, app: Any, profiles: Profiles,
                                                 client: Client) -> None:
    profiles.write(f"""
        [profiles.bad]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = "definitely-not-the-secret"
        scope = "{emu.api_scope}"
    """)
    with pytest.raises(TokenError) as info:
        client.get(f"{emu.api_url}/x", EntraAuth("bad"))
    err = info.value
    assert err.error == "invalid_client"
    assert err.error_codes == (7000215,)
    assert err.status == 401
    assert err.profile == "bad"
    assert "not its id" in str(err)
    assert "definitely-not-the-secret" not in str(err)
    assert emu.count("token") == 1  # a 4xx is not retried


def test_expired_secret_says_create_a_new_one(emu: Emulator, cc_profile: str, app: Any) -> None:
    emu.expire_secret(app.client_id)
    with pytest.raises(TokenError) as info:
        get_token(cc_profile)
    assert info.value.error_codes == (7000222,)
    assert "create a new one" in str(info.value)


def test_unknown_client_in_tenant(emu: Emulator, profiles: Profiles) -> None:
    profiles.write(f"""
        [profiles.p]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{uuid.uuid4()}"
        client_secret = "x"
        scope = "{emu.api_scope}"
    """)
    with pytest.raises(TokenError) as info:
        get_token("p")
    assert info.value.error_codes == (700016,)
    assert "client_id and tenant" in str(info.value)


def test_another_tenant_gets_its_own_token(emu: Emulator, cc_profile: str, client: Client) -> None:
    domain = f"fabrikam{uuid.uuid4().hex[:8]}.onmicrosoft.com"
    other = emu.add_tenant(domain)
    home = client.get(f"{emu.api_url}/x", EntraAuth(cc_profile)).json()["claims"]
    away = client.get(f"{emu.api_url}/x", EntraAuth(cc_profile, tenant=domain)).json()["claims"]
    assert home["tid"] == emu.tenant_id
    assert away["tid"] == other
    assert emu.count("token") == 2
    assert get_token(cc_profile).token != get_token(cc_profile, tenant=other).token


def test_scope_override_is_cached_separately(emu: Emulator, cc_profile: str) -> None:
    api = get_token(cc_profile)
    graph = get_token(cc_profile, scope="https://graph.microsoft.com/.default")
    assert jwtlib.decode(graph.token)[1]["aud"] == "https://graph.microsoft.com"
    assert jwtlib.decode(api.token)[1]["aud"] == emu.api_resource
    assert emu.count("token") == 2


def test_construction_does_no_io(tmp_path: Path, emu: Emulator) -> None:
    auth = EntraAuth("nothing", config=tmp_path / "missing.toml")  # no error yet
    assert "nothing" in repr(auth)
    with pytest.raises(ConfigError) as info:
        Client("httpx").get(f"{emu.api_url}/x", auth)
    assert "missing.toml" in str(info.value)
    assert emu.count("any") == 0


# ------------------------------------------------------------------ refresh ahead of expiry


def test_token_is_refreshed_ahead_of_expiry(emu: Emulator, cc_profile: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token(cc_profile)
    clock.now = first.expires_on - 301  # not yet within five minutes
    assert get_token(cc_profile) is first
    clock.now = first.expires_on - 299  # within five minutes: refresh (in the background)
    assert get_token(cc_profile) == first
    PROVIDER.join_background()
    second = get_token(cc_profile)
    assert second.token != first.token
    assert emu.count("token") == 2


def test_refresh_in_from_the_service_is_honoured(emu: Emulator, cc_profile: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    emu.refresh_in = 600
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token(cc_profile)
    clock.now += 601
    get_token(cc_profile)  # starts the refresh in the background
    PROVIDER.join_background()
    assert get_token(cc_profile).token != first.token


def test_failed_refresh_keeps_serving_the_valid_token(emu: Emulator, cc_profile: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      client: Client) -> None:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    auth = EntraAuth(cc_profile)
    assert client.get(f"{emu.api_url}/a", auth).status == 200
    first = get_token(cc_profile)
    clock.now = first.expires_on - 120
    emu.inject("status", count=10, status=503, retry_after=0)
    answer = client.get(f"{emu.api_url}/a", auth)  # refresh fails: the old token still serves
    assert answer.status == 200
    PROVIDER.join_background()
    assert get_token(cc_profile) == first
    failed_attempts = emu.count("token")
    assert client.get(f"{emu.api_url}/a", auth).status == 200
    assert emu.count("token") == failed_attempts  # and it does not hammer the service
    emu.reset()
    clock.now += 31  # after the back-off, a refresh is tried again and succeeds
    assert client.get(f"{emu.api_url}/a", auth).status == 200
    PROVIDER.join_background()
    assert get_token(cc_profile).token != first.token


def test_expired_token_is_not_served_when_refresh_fails(emu: Emulator, cc_profile: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token(cc_profile)
    clock.now = first.expires_on + 1
    emu.inject("status", count=10, status=503, retry_after=0)
    with pytest.raises(TokenError):
        get_token(cc_profile)


# ------------------------------------------------------------------ certificates

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(days: int = 30, start_days: int = -1, key: Any = _KEY) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authlayer-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=start_days))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate, key: Any = _KEY) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + cert.public_bytes(
        serialization.Encoding.PEM)


def _cert_profile(emu: Emulator, profiles: Profiles, client_id: str, certificate: str,
                  extra: str = "") -> None:
    profiles.write(f"""
        [profiles.cert]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{client_id}"
        certificate = {certificate}
        scope = "{emu.api_scope}"
        {extra}
    """)


@pytest.mark.parametrize(("alg", "x5c"), [("PS256", False), ("RS256", False), ("PS256", True)])
def test_certificate_assertion(emu: Emulator, profiles: Profiles, tmp_path: Path, alg: str,
                               x5c: bool, client: Client) -> None:
    cert = _cert()
    app = emu.register_app(certificate=cert)
    (tmp_path / "app.pem").write_bytes(_pem(cert))
    _cert_profile(emu, profiles, app.client_id,
                  f'{{ path = "app.pem", send_x5c = {str(x5c).lower()} }}',
                  f'assertion_alg = "{alg}"')
    assert client.get(f"{emu.api_url}/x", EntraAuth("cert")).status == 200
    form = emu.requests[-2].form if emu.requests[-1].endpoint == "api" else emu.requests[-1].form
    header, claims = jwtlib.verify(form["client_assertion"], _KEY.public_key())
    assert header["alg"] == alg
    assert ("x5t#S256" in header) == (alg == "PS256")
    assert ("x5t" in header) == (alg == "RS256")
    assert ("x5c" in header) == x5c
    assert claims["aud"] == f"{emu.url}/{emu.tenant_id}/oauth2/v2.0/token"
    assert claims["iss"] == claims["sub"] == app.client_id
    assert claims["exp"] - claims["nbf"] <= 600
    assert "client_secret" not in form


def test_each_token_request_gets_a_fresh_jti(emu: Emulator, profiles: Profiles,
                                             tmp_path: Path) -> None:
    cert = _cert()
    app = emu.register_app(certificate=cert)
    (tmp_path / "app.pem").write_bytes(_pem(cert))
    _cert_profile(emu, profiles, app.client_id, '"app.pem"')
    get_token("cert")
    get_token("cert", force_refresh=True)
    jtis = {jwtlib.decode(r.form["client_assertion"])[1]["jti"] for r in emu.requests}
    assert len(jtis) == 2


def test_pkcs12_with_password(emu: Emulator, profiles: Profiles, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    cert = _cert()
    app = emu.register_app(certificate=cert)
    blob = pkcs12.serialize_key_and_certificates(
        b"app", _KEY, cert, None, serialization.BestAvailableEncryption(b"pfx-pass"))
    (tmp_path / "app.pfx").write_bytes(blob)
    monkeypatch.setenv("PFX_PASS", "pfx-pass")
    _cert_profile(emu, profiles, app.client_id,
                  '{ path = "app.pfx", password = { env = "PFX_PASS" } }')
    assert get_token("cert").token


def test_pkcs12_wrong_password_is_a_config_error(emu: Emulator, profiles: Profiles,
                                                 tmp_path: Path) -> None:
    cert = _cert()
    app = emu.register_app(certificate=cert)
    blob = pkcs12.serialize_key_and_certificates(
        b"app", _KEY, cert, None, serialization.BestAvailableEncryption(b"right"))
    (tmp_path / "app.pfx").write_bytes(blob)
    _cert_profile(emu, profiles, app.client_id, '{ path = "app.pfx", password = "wrong-pw" }')
    with pytest.raises(ConfigError) as info:
        get_token("cert")
    assert info.value.key == "certificate.password"
    assert "wrong-pw" not in str(info.value)
    assert emu.count("token") == 0


def test_expired_certificate_fails_before_anything_is_sent(emu: Emulator, profiles: Profiles,
                                                           tmp_path: Path) -> None:
    cert = _cert(days=-1, start_days=-30)
    app = emu.register_app(certificate=cert)
    (tmp_path / "old.pem").write_bytes(_pem(cert))
    _cert_profile(emu, profiles, app.client_id, '"old.pem"')
    with pytest.raises(ConfigError) as info:
        get_token("cert")
    assert "expired" in str(info.value)
    assert info.value.key == "certificate"
    assert emu.count("any") == 0


def test_unregistered_certificate_is_refused_with_hint(emu: Emulator, profiles: Profiles,
                                                       tmp_path: Path) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = emu.register_app(certificate=_cert())
    wrong = _cert(key=other_key)
    (tmp_path / "wrong.pem").write_bytes(_pem(wrong, other_key))
    _cert_profile(emu, profiles, app.client_id, '"wrong.pem"')
    with pytest.raises(TokenError) as info:
        get_token("cert")
    assert info.value.error_codes == (700027,)
    assert "upload the certificate" in str(info.value)


def test_client_assertion_source_is_read_for_every_token_request(
    emu: Emulator, profiles: Profiles, tmp_path: Path
) -> None:
    """A federated (ready-made) assertion is read afresh each time: the file rotates."""
    from authlayer.certificate import build_assertion, load_certificate
    from authlayer.profile import CertificateConfig

    cert = _cert()
    app = emu.register_app(certificate=cert)
    (tmp_path / "signer.pem").write_bytes(_pem(cert))
    signer = load_certificate(CertificateConfig(str(tmp_path / "signer.pem")), profile="t",
                              config_path=None)
    audience = f"{emu.url}/{emu.tenant_id}/oauth2/v2.0/token"
    token_file = tmp_path / "federated.jwt"
    profiles.write(f"""
        [profiles.fed]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_assertion = {{ file = "federated.jwt" }}
        scope = "{emu.api_scope}"
    """)
    written = []
    for _ in range(2):
        assertion = build_assertion(signer, client_id=app.client_id, audience=audience)
        token_file.write_text(assertion + "\n")
        written.append(assertion)
        get_token("fed", force_refresh=True)
    assert [r.form["client_assertion"] for r in emu.requests] == written


def test_new_process_keeps_a_stored_token_when_its_refresh_fails(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, app_profile: Callable[..., str]
) -> None:
    app_profile("filed", cache="file")
    first = get_token("filed")
    PROVIDER.reset()  # as if a new process started
    clock = Clock()
    clock.now = first.expires_on - 120  # due for refresh, still valid
    monkeypatch.setattr(PROVIDER, "clock", clock)
    emu.inject("status", count=10, status=503, retry_after=0)
    assert get_token("filed") == first


def test_no_profile_name_means_authlayer_profile(emu: Emulator, app_profile: Any,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 client: Client) -> None:
    app_profile("first")
    graph = app_profile("second", scope="https://graph.microsoft.com/.default",
                        allowed_hosts=["127.0.0.1"])
    monkeypatch.setenv("AUTHLAYER_PROFILE", "first")
    assert client.get(f"{emu.api_url}/x", EntraAuth()).status == 200
    assert jwtlib.decode(get_token().token)[1]["aud"] == emu.api_resource
    monkeypatch.setenv("AUTHLAYER_PROFILE", graph)  # followed, not remembered from before
    assert jwtlib.decode(get_token().token)[1]["aud"] == "https://graph.microsoft.com"
