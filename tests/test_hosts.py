"""Where the token may go (CONTRACT §5)."""

from __future__ import annotations

import pytest

from authlayer.auth import claims_from_challenge
from authlayer.hosts import HostPolicy, NoHostError, is_loopback, resource_of_scope
from authlayer.jwt import b64url_encode


def test_graph_scope_allows_graph_over_https_only() -> None:
    policy = HostPolicy.for_scopes(["https://graph.microsoft.com/.default"])
    assert policy.allows("https", "graph.microsoft.com")
    assert not policy.allows("http", "graph.microsoft.com")
    assert not policy.allows("https", "evil.example")
    assert not policy.allows("https", "graph.microsoft.com.evil.example")


def test_key_vault_allows_its_subdomains() -> None:
    policy = HostPolicy.for_scopes(["https://vault.azure.net/.default"])
    assert policy.allows("https", "myvault.vault.azure.net")
    assert policy.allows("https", "vault.azure.net")
    assert not policy.allows("https", "notvault.azure.net")


def test_azure_devops_resource_id_allows_its_hosts() -> None:
    policy = HostPolicy.for_scopes(["499b84ac-1321-427f-aa17-267ca6975798/.default"])
    assert policy.allows("https", "dev.azure.com")
    assert policy.allows("https", "contoso.visualstudio.com")
    assert policy.allows("https", "vssps.dev.azure.com")
    assert not policy.allows("https", "azure.com")


def test_storage_scope_allows_storage_endpoints() -> None:
    policy = HostPolicy.for_scopes(["https://storage.azure.com/.default"])
    assert policy.allows("https", "acct.blob.core.windows.net")
    assert not policy.allows("https", "core.windows.net.evil.example")


def test_allowed_hosts_win_over_scopes() -> None:
    policy = HostPolicy.for_scopes(["api://x/.default"], [".example.com", "api.other.org"])
    assert policy.allows("https", "example.com")
    assert policy.allows("https", "a.b.example.com")
    assert policy.allows("https", "API.OTHER.ORG")
    assert not policy.allows("https", "other.org")
    assert not policy.allows("https", "badexample.com")


def test_scope_without_a_host_is_refused() -> None:
    with pytest.raises(NoHostError):
        HostPolicy.for_scopes(["api://11111111-2222-3333-4444-555555555555/.default"])
    with pytest.raises(NoHostError):
        HostPolicy.for_scopes(["openid", "offline_access"])


def test_plain_http_only_to_loopback() -> None:
    policy = HostPolicy(["127.0.0.1", "localhost", "::1", "example.com"])
    assert policy.allows("http", "127.0.0.1")
    assert policy.allows("http", "localhost")
    assert policy.allows("http", "[::1]")
    assert not policy.allows("http", "example.com")
    assert not policy.allows("ftp", "example.com")


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", True), ("127.9.9.9", True),
                                                ("::1", True), ("localhost", True),
                                                ("10.0.0.1", False), ("example.com", False),
                                                ("169.254.169.254", False),
                                                ("evil.localhost", False)])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_resource_of_scope() -> None:
    assert resource_of_scope("https://graph.microsoft.com/.default") == "https://graph.microsoft.com"
    assert resource_of_scope("https://graph.microsoft.com/User.Read") == (
        "https://graph.microsoft.com")
    assert resource_of_scope("User.Read") == "https://graph.microsoft.com"
    assert resource_of_scope("offline_access") is None
    assert resource_of_scope("https://vault.azure.net") == "https://vault.azure.net"


def test_claims_challenge_is_decoded_and_merged_with_capabilities() -> None:
    claims = b64url_encode(b'{"access_token":{"nbf":{"essential":true,"value":"1603742800"}}}')
    header = (f'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
              f'oauth2/authorize", error="insufficient_claims", claims="{claims}"')
    merged = claims_from_challenge(header)
    assert merged is not None
    assert '"nbf":{"essential":true,"value":"1603742800"}' in merged
    assert '"xms_cc":{"values":["cp1"]}' in merged


def test_arm_style_invalid_token_challenge() -> None:
    claims = b64url_encode(b'{"access_token":{"acrs":{"essential":true,"value":"c1"}}}')
    assert claims_from_challenge(f'Bearer error="invalid_token", claims="{claims}"')


def test_plain_401_challenges_are_not_claims_challenges() -> None:
    assert claims_from_challenge('Bearer realm="", error="invalid_token"') is None
    assert claims_from_challenge(None) is None
    assert claims_from_challenge('Bearer error="insufficient_claims", claims="!!!"') is None
