"""Flow ``chain`` end to end against the emulator (CONTRACT §8): members tried in order, the
unavailable ones skipped, a failing one stopping the chain, the first success remembered, scope
inherited, overrides reaching the member; single flight, refresh ahead and the 401 retry working
through a chain as through its member; every bad chain a ConfigError; and one script run
unchanged, in fresh processes, as on a laptop, in GitHub Actions, in AKS and on a VM."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer.chains import ChainUnavailable
from authlayer.emulator import Emulator
from authlayer.emulator.ci import ci_providers
from authlayer.emulator.federated import federated_issuers
from authlayer.emulator.managed_identity import managed_identities
from authlayer.provider import PROVIDER

from .chain_helpers import nothing_here, run_fresh
from .conftest import Client, Clock, Profiles
from .test_azure_cli import CliFolder, _sign_in, subscription


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return nothing_here(tmp_path, monkeypatch)


def _claims(token: str) -> dict[str, Any]:
    return jwtlib.decode(token)[1]


def _app_table(emu: Emulator, name: str, client_id: str, secret: str, extra: str = "") -> str:
    key = "client_assertion" if any(k in secret for k in ("github", "pipelines", "profile")) \
        else "client_secret"
    return f"""
        [profiles.{name}]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{client_id}"
        {key} = {secret}
        timeout = 5
        {extra}
    """


@pytest.fixture
def two_apps(emu: Emulator, profiles: Profiles, bare: dict[str, str],
             monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Chain ``c`` of ``ci`` (its secret in $CI_SECRET, unset: not available) and ``app``."""
    ci = emu.register_app(secret="ci-secret-value")
    app = emu.register_app(secret="app-secret-value")
    monkeypatch.delenv("CI_SECRET", raising=False)
    profiles.write(f"""
        [profiles.c]
        flow = "chain"
        chain = ["ci", "app"]
        scope = "{emu.api_scope}"
    """ + _app_table(emu, "ci", ci.client_id, '{ env = "CI_SECRET" }')
        + _app_table(emu, "app", app.client_id, '"app-secret-value"'))
    return ci, app


# ------------------------------------------------------------------ choosing a member


def test_chain_uses_the_first_available_member(emu: Emulator, two_apps: tuple[Any, Any],
                                               client: Client) -> None:
    _ci, app = two_apps
    answer = client.get(f"{emu.api_url}/x", EntraAuth("c"))
    assert answer.status == 200
    assert answer.json()["claims"]["appid"] == app.client_id
    assert emu.count("token") == 1


def test_chain_binding_is_its_members_and_says_why_others_were_skipped(
        emu: Emulator, two_apps: tuple[Any, Any]) -> None:
    binding = PROVIDER.bind("c")
    assert binding.base.name == "app"
    assert binding.via is not None
    assert (binding.via.chain, binding.via.member) == ("c", "app")
    assert binding.via.skipped == (("ci", "client_secret: environment variable CI_SECRET is "
                                           "not set"),)
    # The member's cache entry, not another.
    assert binding.key == PROVIDER.bind("app", scope=emu.api_scope).key


def test_available_member_that_fails_stops_the_chain(emu: Emulator, profiles: Profiles,
                                                     bare: dict[str, str]) -> None:
    bad = emu.register_app(secret="right-secret-value")
    good = emu.register_app(secret="good-secret-value")
    profiles.write(f"""
        [profiles.c]
        flow = "chain"
        chain = ["bad", "good"]
        scope = "{emu.api_scope}"
    """ + _app_table(emu, "bad", bad.client_id, '"wrong-secret-value"')
        + _app_table(emu, "good", good.client_id, '"good-secret-value"'))
    with pytest.raises(TokenError) as info:
        get_token("c")
    assert info.value.profile == "bad"
    assert info.value.error == "invalid_client"
    assert emu.count("token", client_id=good.client_id) == 0
    with pytest.raises(TokenError):  # and again: it never falls through to the next member
        get_token("c")
    assert emu.count("token", client_id=good.client_id) == 0


def test_no_member_available_names_every_member_and_why(emu: Emulator, profiles: Profiles,
                                                        bare: dict[str, str]) -> None:
    ci = emu.register_app(secret="ci-secret-value")
    profiles.write(f"""
        [profiles.anywhere]
        flow = "chain"
        chain = ["ci", "cluster", "vm", "laptop", "dev"]
        scope = "{emu.api_scope}"

        [profiles.cluster]
        flow = "workload_identity"
        authority = "{emu.url}"

        [profiles.vm]
        flow = "managed_identity"
        timeout = 1

        [profiles.laptop]
        flow = "azure_cli"
        authority = "{emu.url}"

        [profiles.dev]
        flow = "azd"
    """ + _app_table(emu, "ci", ci.client_id, "{ github_actions = true }"))
    with pytest.raises(TokenError) as info:
        get_token("anywhere")
    error = info.value
    assert isinstance(error, ChainUnavailable)
    assert error.error == "chain_unavailable"
    assert error.profile == "anywhere"
    reasons = dict(error.skipped)
    assert list(reasons) == ["ci", "cluster", "vm", "laptop", "dev"]
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in reasons["ci"]
    assert "AZURE_FEDERATED_TOKEN_FILE" in reasons["cluster"] or "tenant" in reasons["cluster"]
    assert "no managed identity endpoint" in reasons["vm"]
    assert "az is not on PATH" in reasons["laptop"]
    assert reasons["dev"] == "azd (the Azure Developer CLI) is not on PATH"
    message = str(error)
    for name, why in error.skipped:
        assert f"{name}: {why}" in message
    assert emu.count("any") == 0


def test_every_skip_reason_of_a_secret_source(emu: Emulator, profiles: Profiles,
                                              bare: dict[str, str]) -> None:
    app = emu.register_app(secret="s3cret-value")
    conn = str(uuid.uuid4())
    profiles.write(f"""
        [profiles.c]
        flow = "chain"
        chain = ["by_env", "pipelines", "borrowed", "by_cert"]
        scope = "{emu.api_scope}"

        [profiles.mi]
        flow = "managed_identity"
        scope = "api://AzureADTokenExchange/.default"
        timeout = 1
    """ + _app_table(emu, "by_env", app.client_id, '{ env = "NOT_SET_HERE" }')
        + _app_table(emu, "pipelines", app.client_id, f'{{ azure_pipelines = "{conn}" }}')
        + _app_table(emu, "borrowed", app.client_id, '{ profile = "mi" }')
        + f"""
        [profiles.by_cert]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        certificate = {{ path = "{profiles.path}", password = {{ env = "NO_PASSWORD" }} }}
    """)
    with pytest.raises(ChainUnavailable) as info:
        get_token("c")
    reasons = dict(info.value.skipped)
    assert reasons["by_env"] == "client_secret: environment variable NOT_SET_HERE is not set"
    assert "SYSTEM_OIDCREQUESTURI" in reasons["pipelines"]
    assert reasons["borrowed"].startswith("client_assertion: profile 'mi': no managed identity")
    assert reasons["by_cert"] == ("certificate.password: environment variable NO_PASSWORD is "
                                  "not set")


def test_first_success_is_remembered_for_the_process(
        emu: Emulator, two_apps: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ci, app = two_apps
    assert _claims(get_token("c").token)["appid"] == app.client_id
    monkeypatch.setenv("CI_SECRET", "ci-secret-value")  # the first member is available now
    other = "https://vault.azure.net/.default"
    assert _claims(get_token("c", scope=other).token)["appid"] == app.client_id
    binding = PROVIDER.bind("c", scope=other)
    assert binding.via is not None
    assert binding.via.remembered
    PROVIDER.reset()  # a new process, as it were: the chain is walked again
    assert _claims(get_token("c").token)["appid"] == ci.client_id


def test_members_inherit_the_chains_scope_unless_they_set_one(
        emu: Emulator, profiles: Profiles, bare: dict[str, str]) -> None:
    app = emu.register_app(secret="s3cret-value")
    profiles.write(f"""
        [defaults]
        scope = "https://graph.microsoft.com/.default"

        [profiles.c]
        flow = "chain"
        chain = ["app"]
        scope = "{emu.api_scope}"

        [profiles.own]
        flow = "chain"
        chain = ["vault"]
        scope = "{emu.api_scope}"
    """ + _app_table(emu, "app", app.client_id, '"s3cret-value"')
        + _app_table(emu, "vault", app.client_id, '"s3cret-value"',
                     'scope = "https://vault.azure.net/.default"'))
    # The chain's scope beats [defaults]; the member's own beats the chain's.
    assert PROVIDER.bind("c").base.scopes == (emu.api_scope,)
    assert _claims(get_token("c").token)["aud"] == emu.api_resource
    assert PROVIDER.bind("own").base.scopes == ("https://vault.azure.net/.default",)
    assert PROVIDER.bind("app").base.scopes == ("https://graph.microsoft.com/.default",)


def test_scope_and_tenant_overrides_reach_the_member(emu: Emulator, profiles: Profiles,
                                                     bare: dict[str, str]) -> None:
    other = emu.add_tenant()
    app = emu.register_app(secret="s3cret-value", tenants=[emu.tenant_id, other])
    profiles.write(f"""
        [profiles.c]
        flow = "chain"
        chain = ["app"]
        scope = "{emu.api_scope}"
    """ + _app_table(emu, "app", app.client_id, '"s3cret-value"'))
    claims = _claims(get_token("c", tenant=other).token)
    assert (claims["tid"], claims["appid"]) == (other, app.client_id)
    vault = _claims(get_token("c", scope="https://vault.azure.net/.default").token)
    assert vault["aud"] == "https://vault.azure.net"
    assert _claims(get_token("c").token)["tid"] == emu.tenant_id


def test_chain_of_chains_passes_the_scope_down(emu: Emulator, two_apps: tuple[Any, Any],
                                               profiles: Profiles) -> None:
    _ci, app = two_apps
    text = profiles.path.read_text()
    profiles.write(text + """
        [profiles.outer]
        flow = "chain"
        chain = ["nothing", "c"]
        scope = "{emu.api_scope}"

        [profiles.nothing]
        flow = "chain"
        chain = ["ci"]
    """.replace("\n        ", "\n").replace("{emu.api_scope}", emu.api_scope))
    binding = PROVIDER.bind("outer")
    assert binding.base.name == "app"
    assert binding.via is not None
    assert binding.via.describe() == "'c' -> 'app'"
    assert binding.via.skipped[0][0] == "nothing"
    assert "CI_SECRET" in binding.via.skipped[0][1]
    assert _claims(get_token("outer").token)["appid"] == app.client_id


# ------------------------------------------------------------------ the member's machinery


def test_one_request_for_a_chain_and_its_member_at_once(emu: Emulator,
                                                        two_apps: tuple[Any, Any]) -> None:
    emu.latency = 0.3
    start = threading.Barrier(8)
    tokens: list[str] = []

    def ask(name: str) -> None:
        start.wait()
        tokens.append(get_token(name, scope=emu.api_scope).token)

    threads = [threading.Thread(target=ask, args=("c" if i % 2 else "app",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1
    assert emu.count("token") == 1


def test_refresh_ahead_through_a_chain(emu: Emulator, two_apps: tuple[Any, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token("c")
    clock.now = first.expires_on - 120  # due for refresh, still valid
    assert get_token("c") == first  # served at once; the refresh runs in the background
    PROVIDER.join_background(10)
    assert emu.count("token") == 2
    assert get_token("c") != first


def test_401_is_retried_once_through_a_chain(emu: Emulator, two_apps: tuple[Any, Any],
                                             client: Client) -> None:
    auth = EntraAuth("c")
    assert client.get(f"{emu.api_url}/x", auth).status == 200
    emu.revoke_all()
    answer = client.get(f"{emu.api_url}/x", auth)
    assert answer.status == 200
    assert emu.count("token") == 2


def test_chain_token_goes_only_to_its_hosts(emu: Emulator, two_apps: tuple[Any, Any]) -> None:
    binding = PROVIDER.bind("c")
    assert binding.hosts.allows("http", "127.0.0.1")
    assert not binding.hosts.allows("https", "example.org")


# ------------------------------------------------------------------ bad chains


@pytest.mark.parametrize(("chain", "said"), [
    ('["c"]', "chain names itself"),
    ('["a", "nope"]', "chain names profile 'nope', but the file has no such profile"),
    ('["loop"]', "chain makes a cycle: c -> loop -> c"),
    ("[]", "chain is empty"),
    ('"a"', "chain must be a list of profile names"),
    ('["a", "a"]', "chain names profile 'a' twice"),
    ("[1]", "chain item 1 must be a profile name"),
])
def test_bad_chain_is_a_config_error(emu: Emulator, profiles: Profiles, chain: str,
                                     said: str) -> None:
    path = profiles.write(f"""
        [profiles.c]
        flow = "chain"
        chain = {chain}
        scope = "{emu.api_scope}"

        [profiles.loop]
        flow = "chain"
        chain = ["a", "c"]
    """ + _app_table(emu, "a", "x", '"s"'))
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("c")
    assert said in str(info.value)
    assert (info.value.key, info.value.profile, info.value.path) == ("chain", "c", str(path))
    with pytest.raises(ConfigError):
        get_token("c")


def test_chain_without_chain_key_is_a_config_error(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.c]
        flow = "chain"
        scope = "https://graph.microsoft.com/.default"
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("c")
    assert info.value.key == "chain"
    assert "chain is missing" in str(info.value)


def test_chain_takes_no_credential_keys(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.c]
        flow = "chain"
        chain = ["a"]
        client_secret = "s"

        [profiles.a]
        flow = "azd"
        scope = "https://graph.microsoft.com/.default"
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("c")
    assert info.value.key == "client_secret"


def test_member_without_any_scope_names_the_member(profiles: Profiles,
                                                   bare: dict[str, str]) -> None:
    profiles.write("""
        [profiles.c]
        flow = "chain"
        chain = ["a"]

        [profiles.a]
        flow = "azd"
    """)
    with pytest.raises(ConfigError) as info:
        get_token("c")
    assert (info.value.profile, info.value.key) == ("a", "scope")


def test_chain_is_listed_with_the_built_in_flows() -> None:
    from authlayer import registry

    assert registry.flow("chain").stands_for == "chain"
    assert registry.flow("auto").stands_for == "auto"
    assert "chain" in registry.flow_names()


# ------------------------------------------------------------------ one script, everywhere

_SCRIPT = """
import asyncio, json, sys
import httpx, requests
from authlayer import EntraAuth
url = sys.argv[1]
with requests.Session() as s:
    s.auth = EntraAuth("anywhere")
    first = s.get(url, timeout=10).json()["claims"]
with httpx.Client(auth=EntraAuth("anywhere"), timeout=10) as c:
    second = c.get(url).json()["claims"]
async def third():
    async with httpx.AsyncClient(auth=EntraAuth("anywhere"), timeout=10) as c:
        return (await c.get(url)).json()["claims"]
print(json.dumps([first, second, asyncio.run(third())]))
"""


@pytest.fixture
def everywhere(emu: Emulator, profiles: Profiles, bare: dict[str, str],
               tmp_path: Path) -> dict[str, Any]:
    """One profiles file; what each place offers (its environment variables) and whose token
    the script should get there."""
    ci = ci_providers(emu)
    ci_app = emu.register_app(federated=[ci.github_credential()])
    issuer = federated_issuers(emu).add(f"https://oidc.example/{uuid.uuid4().hex[:8]}")
    subject = "system:serviceaccount:payments:api"
    pod_app = emu.register_app(federated=[{"issuer": issuer.url, "subject": subject,
                                           "audience": "api://AzureADTokenExchange"}])
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(issuer.mint(subject))
    mi = managed_identities(emu)
    alice = _sign_in(emu, f"alice-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")
    cli = CliFolder(tmp_path / "laptop-azure", "127.0.0.1")
    cli.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    path = profiles.write(f"""
        [profiles.anywhere]
        flow = "chain"
        chain = ["ci", "cluster", "vm", "laptop"]
        scope = "{emu.api_scope}"

        [profiles.ci]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{ci_app.client_id}"
        client_assertion = {{ github_actions = true }}
        timeout = 5

        [profiles.cluster]
        flow = "workload_identity"
        timeout = 5

        [profiles.vm]
        flow = "managed_identity"
        timeout = 5

        [profiles.laptop]
        flow = "azure_cli"
        authority = "{emu.url}"
        timeout = 5
    """)
    assert mi.system is not None
    base = {**bare, "AUTHLAYER_CONFIG": str(path),
            "AUTHLAYER_CACHE_DIR": str(tmp_path / "fresh-cache")}
    return {
        "github_actions": ({**base, "ACTIONS_ID_TOKEN_REQUEST_URL": ci.github_request_url,
                            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": ci.github_request_token},
                           "ci", ("appid", ci_app.client_id)),
        "aks": ({**base, "AZURE_TENANT_ID": emu.tenant_id, "AZURE_CLIENT_ID": pod_app.client_id,
                 "AZURE_FEDERATED_TOKEN_FILE": str(token_file), "AZURE_AUTHORITY_HOST": emu.url},
                "cluster", ("appid", pod_app.client_id)),
        "vm": ({**base, "AZURE_POD_IDENTITY_AUTHORITY_HOST": mi.imds_host},
               "vm", ("oid", mi.system.object_id)),
        "laptop": ({**base, "AZURE_CONFIG_DIR": str(cli.path)},
                   "laptop", ("preferred_username", alice.username)),
        "nowhere": (base, None, None),
    }


@pytest.mark.parametrize("place", ["laptop", "github_actions", "aks", "vm"])
def test_one_script_runs_unchanged_everywhere(emu: Emulator, everywhere: dict[str, Any],
                                              place: str) -> None:
    env, member, (claim, expected) = everywhere[place]
    done = run_fresh(_SCRIPT, env, f"{emu.api_url}/x")
    assert done.returncode == 0, done.stderr
    first, second, third = json.loads(done.stdout)
    assert first[claim] == second[claim] == third[claim] == expected
    checked = run_fresh("import sys; from authlayer.cli import main; sys.exit(main())", env,
                        "check", "anywhere")
    assert checked.returncode == 0, checked.stderr
    assert f"chain member   '{member}'" in checked.stdout
    assert "flow chain" in checked.stdout
    listed = run_fresh("import sys; from authlayer.cli import main; sys.exit(main())", env,
                       "profiles")
    assert listed.returncode == 0, listed.stderr
    assert f"chain: uses '{member}'" in listed.stdout


def test_one_script_nowhere_says_what_each_member_needs(emu: Emulator,
                                                        everywhere: dict[str, Any]) -> None:
    env, _member, _expected = everywhere["nowhere"]
    done = run_fresh("import sys; from authlayer.cli import main; sys.exit(main())", env,
                     "token", "anywhere")
    assert done.returncode == 1
    assert done.stdout == ""
    said = done.stderr
    assert "no member of the chain is available here" in said
    for name in ("ci:", "cluster:", "vm:", "laptop:"):
        assert name in said
    assert "Traceback" not in said
    listed = run_fresh("import sys; from authlayer.cli import main; sys.exit(main())", env,
                       "profiles")
    assert "chain: no member available" in listed.stdout
    assert "skipped 'vm': no managed identity endpoint" in listed.stdout
