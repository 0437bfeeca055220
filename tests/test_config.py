"""Tests of authlayer.config: where the profiles file is found, how it is read, inherited and
validated, the ConfigErrors for broken profiles (file, profile and key named, no secret quoted),
secret sources as configured, and the memoisation of parsed files."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authlayer.config import (
    AZURE_CLI_CLIENT_ID,
    KEYS,
    _layers,
    clear_cache,
    config_path,
    load_profile,
    load_profiles,
    profile_names,
)
from authlayer.errors import ConfigError
from authlayer.profile import FLOWS, CertificateConfig, Profile, SecretSource

CID = "6731de76-14a6-49ae-97bc-6eba6914391e"
TENANT = "contoso.onmicrosoft.com"
GRAPH = "https://graph.microsoft.com/.default"
# Stands for a real secret: it must never show up in an error message or a repr.
SECRET = "S3cr3t~VALUE-never-shown"

CC = f"""\
flow = "client_credentials"
client_id = "{CID}"
tenant = "{TENANT}"
scope = "{GRAPH}"
"""
CC_SECRET = CC + f'client_secret = "{SECRET}"\n'
DEVICE = f"""\
flow = "device_code"
client_id = "{CID}"
scope = "{GRAPH}"
"""
MI = """\
flow = "managed_identity"
scope = "https://management.azure.com/.default"
"""


def q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, but for astral characters)."""
    return json.dumps(value, ensure_ascii=False)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    for name in ("AUTHLAYER_CONFIG", "AUTHLAYER_PROFILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    clear_cache()
    yield
    clear_cache()


def write(tmp_path: Path, text: str, name: str = "profiles.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def profile_file(tmp_path: Path, body: str, name: str = "p") -> Path:
    return write(tmp_path, f"[profiles.{name}]\n{body}")


def config_error(path: Path, name: str = "p", **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_profile(name, config=path, **overrides)
    return caught.value


# ------------------------------------------------------------------------------------------
# Broken profiles: each names the file, the profile and the key, and says what is wrong.

# (id, file text, expected profile attribute, expected key attribute, part of the message)
BAD: list[tuple[str, str, Optional[str], Optional[str], str]] = [
    (
        "unknown-key-did-you-mean",
        f"[profiles.p]\n{CC}client_secert = {q(SECRET)}\n",
        "p",
        "client_secert",
        "unknown key 'client_secert'; did you mean 'client_secret'?",
    ),
    (
        "unknown-key-alias",
        f"[profiles.p]\n{CC}cert = 'app.pem'\n",
        "p",
        "cert",
        "did you mean 'certificate'?",
    ),
    (
        "timeout-wrong-type",
        f'[profiles.p]\n{CC_SECRET}timeout = "30"\n',
        "p",
        "timeout",
        "timeout must be a number of seconds, not a string",
    ),
    (
        "secret-and-certificate",
        f'[profiles.p]\n{CC_SECRET}certificate = "cert.pem"\n',
        "p",
        "certificate",
        "client_secret and certificate are both set",
    ),
    (
        "bad-toml-line",
        f'[profiles.p]\nflow = "client_credentials"\nclient_secret = {q(SECRET)}\nscope = = 1\n',
        None,
        None,
        "line 4",
    ),
    (
        "extends-cycle",
        f'[profiles.p]\n{CC_SECRET}extends = "q"\n[profiles.q]\nextends = "r"\n'
        '[profiles.r]\nextends = "q"\n',
        "p",
        "extends",
        "extends makes a cycle: q -> r -> q (in profile 'r')",
    ),
    (
        "extends-self",
        f'[profiles.p]\n{CC_SECRET}extends = "p"\n',
        "p",
        "extends",
        "cycle: p -> p",
    ),
    (
        "extends-unknown",
        f'[profiles.base]\n{CC_SECRET}\n[profiles.p]\nextends = "bsae"\n',
        "p",
        "extends",
        "extends 'bsae', but the file has no such profile; did you mean 'base'?",
    ),
    (
        "extends-not-a-string",
        f"[profiles.p]\n{CC_SECRET}extends = 3\n",
        "p",
        "extends",
        "extends must be the name of another profile, not an integer",
    ),
    (
        "http-authority-not-loopback",
        f'[profiles.p]\n{CC_SECRET}authority = "http://login.example.com"\n',
        "p",
        "authority",
        "uses http://, which is allowed only for loopback hosts",
    ),
    (
        "authority-not-a-url",
        f'[profiles.p]\n{CC_SECRET}authority = "login.microsoftonline.com"\n',
        "p",
        "authority",
        "is not an https:// URL",
    ),
    (
        "authority-with-tenant",
        f'[profiles.p]\n{CC_SECRET}authority = "https://login.microsoftonline.com/{TENANT}"\n',
        "p",
        "authority",
        "the tenant goes in tenant",
    ),
    (
        "authority-with-query",
        f'[profiles.p]\n{CC_SECRET}authority = "https://login.example.com/x?y=1"\n',
        "p",
        "authority",
        "must not have a query",
    ),
    (
        "unknown-flow",
        f'[profiles.p]\nflow = "client_credential"\nclient_id = "{CID}"\nscope = "{GRAPH}"\n',
        "p",
        "flow",
        "unknown flow 'client_credential'; did you mean 'client_credentials'?",
    ),
    (
        "flow-missing",
        f'[profiles.p]\nclient_id = "{CID}"\nscope = "{GRAPH}"\n',
        "p",
        "flow",
        "flow is missing",
    ),
    (
        "flow-wrong-type",
        "[profiles.p]\nflow = 1\n",
        "p",
        "flow",
        "flow must be a string, not an integer",
    ),
    (
        "client-id-missing",
        f'[profiles.p]\nflow = "client_credentials"\ntenant = "{TENANT}"\nscope = "{GRAPH}"\n'
        f"client_secret = {q(SECRET)}\n",
        "p",
        "client_id",
        "client_id is missing: flow 'client_credentials' needs the application (client) id",
    ),
    (
        "tenant-missing",
        f'[profiles.p]\nflow = "client_credentials"\nclient_id = "{CID}"\nscope = "{GRAPH}"\n'
        f"client_secret = {q(SECRET)}\n",
        "p",
        "tenant",
        "tenant is missing",
    ),
    (
        "client-credentials-tenant-common",
        f"[profiles.p]\n{CC_SECRET.replace(TENANT, 'common')}",
        "p",
        "tenant",
        "flow 'client_credentials' cannot use tenant 'common'",
    ),
    (
        "password-tenant-consumers",
        f'[profiles.p]\nflow = "password"\nclient_id = "{CID}"\ntenant = "consumers"\n'
        f'scope = "{GRAPH}"\nusername = "a@b.c"\npassword = {q(SECRET)}\n',
        "p",
        "tenant",
        "flow 'password' cannot use tenant 'consumers'",
    ),
    (
        "tenant-not-valid",
        f"[profiles.p]\n{CC_SECRET.replace(TENANT, 'contoso')}",
        "p",
        "tenant",
        "tenant 'contoso' is not a tenant GUID, a domain",
    ),
    (
        "client-id-with-space",
        f"[profiles.p]\n{CC_SECRET.replace(CID, 'my app')}",
        "p",
        "client_id",
        "client_id must not contain spaces",
    ),
    (
        "cloud-and-authority",
        f'[profiles.p]\n{CC_SECRET}cloud = "usgov"\nauthority = "https://login.example.com"\n',
        "p",
        "cloud",
        "cloud and authority are both set",
    ),
    (
        "bad-cloud",
        f'[profiles.p]\n{CC_SECRET}cloud = "gov"\n',
        "p",
        "cloud",
        "unknown cloud 'gov'; did you mean 'usgov'?",
    ),
    (
        "bad-prompt",
        f'[profiles.p]\nflow = "authorization_code"\nclient_id = "{CID}"\nscope = "{GRAPH}"\n'
        'prompt = "select-account"\n',
        "p",
        "prompt",
        "prompt 'select-account' is not valid; did you mean 'select_account'?",
    ),
    (
        "bad-port",
        f'[profiles.p]\nflow = "authorization_code"\nclient_id = "{CID}"\nscope = "{GRAPH}"\n'
        "redirect_port = 70000\n",
        "p",
        "redirect_port",
        "redirect_port 70000 is not a port number from 0 to 65535",
    ),
    (
        "port-wrong-type",
        f'[profiles.p]\nflow = "authorization_code"\nclient_id = "{CID}"\nscope = "{GRAPH}"\n'
        'redirect_port = "8400"\n',
        "p",
        "redirect_port",
        "not a string",
    ),
    (
        "negative-timeout",
        f"[profiles.p]\n{CC_SECRET}timeout = -1\n",
        "p",
        "timeout",
        "timeout -1 is out of range",
    ),
    (
        "timeout-too-long",
        f"[profiles.p]\n{CC_SECRET}timeout = 601\n",
        "p",
        "timeout",
        "at most 600",
    ),
    (
        "assertion-alg-without-certificate",
        f'[profiles.p]\n{CC_SECRET}assertion_alg = "RS256"\n',
        "p",
        "assertion_alg",
        "assertion_alg applies only with certificate",
    ),
    (
        "allowed-hosts-url",
        f'[profiles.p]\n{CC_SECRET}allowed_hosts = ["api.example.com", "https://x.example.com"]\n',
        "p",
        "allowed_hosts",
        "allowed_hosts item 2 'https://x.example.com' is a URL",
    ),
    (
        "allowed-hosts-port",
        f'[profiles.p]\n{CC_SECRET}allowed_hosts = ["api.example.com:443"]\n',
        "p",
        "allowed_hosts",
        "has a port",
    ),
    (
        "allowed-hosts-wildcard",
        f'[profiles.p]\n{CC_SECRET}allowed_hosts = ["*.example.com"]\n',
        "p",
        "allowed_hosts",
        "write '.example.com'",
    ),
    (
        "allowed-hosts-string",
        f'[profiles.p]\n{CC_SECRET}allowed_hosts = "api.example.com"\n',
        "p",
        "allowed_hosts",
        "allowed_hosts must be a list of host names",
    ),
    (
        "secret-source-two-keys",
        f'[profiles.p]\n{CC}client_secret = {{ env = "A", file = "b" }}\n',
        "p",
        "client_secret",
        "client_secret has both 'env' and 'file': a secret source takes exactly one",
    ),
    (
        "secret-source-unknown-key",
        f'[profiles.p]\n{CC}client_secret = {{ enb = "A" }}\n',
        "p",
        "client_secret",
        "unknown key 'enb' in client_secret; did you mean 'env'?",
    ),
    (
        "secret-source-wrong-type",
        f"[profiles.p]\n{CC}client_secret = 12345\n",
        "p",
        "client_secret",
        "client_secret must be a string (the secret itself) or a table",
    ),
    (
        "empty-secret",
        f'[profiles.p]\n{CC}client_secret = ""\n',
        "p",
        "client_secret",
        "client_secret is empty",
    ),
    (
        "command-as-string",
        f'[profiles.p]\n{CC}client_secret = {{ command = "pass show app" }}\n',
        "p",
        "client_secret",
        'client_secret.command must be a list like ["prog", "arg"], not a string',
    ),
    (
        "command-empty-list",
        f"[profiles.p]\n{CC}client_secret = {{ command = [] }}\n",
        "p",
        "client_secret",
        "must be a non-empty list",
    ),
    (
        "no-credential",
        f"[profiles.p]\n{CC}",
        "p",
        "client_secret",
        "needs a client credential: set one of client_secret, certificate or client_assertion",
    ),
    (
        "device-code-with-secret",
        f"[profiles.p]\n{DEVICE}client_secret = {q(SECRET)}\n",
        "p",
        "client_secret",
        "client_secret does not apply to flow 'device_code'",
    ),
    (
        "refresh-token-key-in-client-credentials",
        f"[profiles.p]\n{CC_SECRET}refresh_token = {q(SECRET)}\n",
        "p",
        "refresh_token",
        "refresh_token does not apply to flow 'client_credentials': "
        "it is only for flow 'refresh_token'",
    ),
    (
        "login-hint-in-device-code",
        f'[profiles.p]\n{DEVICE}login_hint = "a@b.c"\n',
        "p",
        "login_hint",
        "it is only for flow 'authorization_code'",
    ),
    (
        "managed-identity-with-tenant",
        f'[profiles.p]\n{MI}tenant = "{TENANT}"\n',
        "p",
        "tenant",
        "tenant does not apply to flow 'managed_identity'",
    ),
    (
        "managed-identity-two-ids",
        f'[profiles.p]\n{MI}client_id = "{CID}"\nobject_id = "{CID}"\n',
        "p",
        "object_id",
        "client_id and object_id are both set",
    ),
    (
        "object-id-not-guid",
        f'[profiles.p]\n{MI}object_id = "my-identity"\n',
        "p",
        "object_id",
        "a GUID",
    ),
    (
        "password-without-username",
        f'[profiles.p]\nflow = "password"\nclient_id = "{CID}"\ntenant = "{TENANT}"\n'
        f'scope = "{GRAPH}"\npassword = {{ env = "PW" }}\n',
        "p",
        "username",
        "username is missing: flow 'password' needs",
    ),
    (
        "refresh-token-flow-without-token",
        f'[profiles.p]\nflow = "refresh_token"\nclient_id = "{CID}"\ntenant = "{TENANT}"\n'
        f'scope = "{GRAPH}"\n',
        "p",
        "refresh_token",
        "refresh_token is missing",
    ),
    (
        "certificate-missing-file",
        f'[profiles.p]\n{CC}certificate = "nope.pem"\n',
        "p",
        "certificate",
        "nope.pem does not exist",
    ),
    (
        "certificate-is-a-folder",
        f'[profiles.p]\n{CC}certificate = {{ path = "." }}\n',
        "p",
        "certificate.path",
        "is a folder, not a file",
    ),
    (
        "certificate-table-unknown-key",
        f'[profiles.p]\n{CC}certificate = {{ path = "cert.pem", pasword = {q(SECRET)} }}\n',
        "p",
        "certificate.pasword",
        "unknown key 'pasword' in certificate; did you mean 'password'?",
    ),
    (
        "certificate-table-without-path",
        f"[profiles.p]\n{CC}certificate = {{ password = {q(SECRET)} }}\n",
        "p",
        "certificate.path",
        "certificate needs a path",
    ),
    (
        "certificate-send-x5c-wrong-type",
        f'[profiles.p]\n{CC}certificate = {{ path = "cert.pem", send_x5c = "yes" }}\n',
        "p",
        "certificate.send_x5c",
        "certificate.send_x5c must be true or false, not a string",
    ),
    (
        "certificate-password-empty",
        f'[profiles.p]\n{CC}certificate = {{ path = "cert.pem", password = "" }}\n',
        "p",
        "certificate.password",
        "certificate.password is empty",
    ),
    (
        "scope-list-item-with-space",
        f'[profiles.p]\nflow = "client_credentials"\nclient_id = "{CID}"\ntenant = "{TENANT}"\n'
        f'client_secret = {q(SECRET)}\nscope = ["{GRAPH}", "User.Read Mail.Read"]\n',
        "p",
        "scope",
        "scope item 2 ('User.Read Mail.Read') contains a space",
    ),
    (
        "scope-empty-list",
        f'[profiles.p]\nflow = "client_credentials"\nclient_id = "{CID}"\ntenant = "{TENANT}"\n'
        f"client_secret = {q(SECRET)}\nscope = []\n",
        "p",
        "scope",
        "scope is an empty list",
    ),
    (
        "scope-wrong-type",
        f'[profiles.p]\nflow = "client_credentials"\nclient_id = "{CID}"\ntenant = "{TENANT}"\n'
        f"client_secret = {q(SECRET)}\nscope = 5\n",
        "p",
        "scope",
        "scope must be a string (scopes separated by spaces) or a list of strings, not an integer",
    ),
    (
        "scope-missing",
        f'[profiles.p]\nflow = "client_credentials"\nclient_id = "{CID}"\ntenant = "{TENANT}"\n'
        f"client_secret = {q(SECRET)}\n",
        "p",
        "scope",
        "scope is missing",
    ),
    (
        "bad-cache",
        f'[profiles.p]\n{CC_SECRET}cache = "disk"\n',
        "p",
        "cache",
        "cache 'disk' is not valid",
    ),
    (
        "unknown-top-level-table",
        f"[profile.p]\n{CC_SECRET}",
        None,
        "profile",
        "unknown top-level table [profile]; did you mean 'profiles'?",
    ),
    (
        "profile-outside-profiles",
        f"[prod]\n{CC_SECRET}",
        None,
        "prod",
        "unknown top-level table [prod]: profiles go in [profiles.prod]",
    ),
    (
        "unknown-top-level-key",
        f'flow = "device_code"\n[profiles.p]\n{CC_SECRET}',
        None,
        "flow",
        "unknown top-level key 'flow'",
    ),
    (
        "unknown-key-in-defaults",
        f'[defaults]\ntennant = "{TENANT}"\n[profiles.p]\n{CC_SECRET}',
        None,
        "tennant",
        "unknown key 'tennant' in [defaults]; did you mean 'tenant'?",
    ),
    (
        "extends-in-defaults",
        f'[defaults]\nextends = "p"\n[profiles.p]\n{CC_SECRET}',
        None,
        "extends",
        "extends cannot be set in [defaults]",
    ),
    (
        "profile-not-a-table",
        'profiles.p = "client_credentials"\n',
        "p",
        None,
        "profiles.p must be a table",
    ),
    (
        "wrong-type-inherited-from-defaults",
        f'[defaults]\ntimeout = "slow"\n[profiles.p]\n{CC_SECRET}',
        "p",
        "timeout",
        "timeout must be a number of seconds, not a string (set in [defaults])",
    ),
    (
        "unknown-key-inherited-from-extends",
        f'[profiles.base]\nscopes = "x"\n[profiles.p]\nextends = "base"\n{CC_SECRET}',
        "p",
        "scopes",
        "did you mean 'scope'? (inherited from profile 'base')",
    ),
    (
        "authority-with-password-is-not-quoted",
        f'[profiles.p]\n{CC_SECRET}authority = "https://me:{SECRET}@login.example.com"\n',
        "p",
        "authority",
        "must not contain a user name or password",
    ),
]


@pytest.mark.parametrize(
    ("text", "profile", "key", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_broken_profile_names_file_profile_and_key(
    tmp_path: Path, text: str, profile: Optional[str], key: Optional[str], fragment: str
) -> None:
    (tmp_path / "cert.pem").write_text("not parsed here\n")
    path = write(tmp_path, text)
    error = config_error(path)
    assert (error.path, error.profile, error.key) == (str(path), profile, key)
    assert fragment in str(error)
    assert str(error).startswith(str(path))
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def test_there_are_many_distinct_broken_profiles() -> None:
    assert len({case[0] for case in BAD}) == len(BAD) >= 30


def test_bad_toml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.p]\nflow = "device_code"\nclient_id = 6731de76\n')
    error = config_error(path)
    assert "not valid TOML" in str(error)
    assert "line 3, column" in str(error)


def test_bad_toml_at_end_of_document_still_names_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[profiles.p]\nflow = "device_code"\nclient_secret = "{SECRET}')
    error = config_error(path)
    assert "line 3" in str(error)
    assert SECRET not in str(error)


def test_profiles_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_bytes(b'[profiles.p]\nflow = "\xff"\n')
    error = config_error(path)
    assert (error.path, error.profile, error.key) == (str(path), None, None)
    assert "not UTF-8" in str(error)


def test_profiles_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Windows editors may start UTF-8 files with a byte order mark: it is not part of the TOML,
    and a line number in a message still counts from the file's first line."""
    path = tmp_path / "profiles.toml"
    path.write_bytes(b"\xef\xbb\xbf" + f"[profiles.p]\n{CC_SECRET}".encode())
    assert load_profile("p", config=path).client_id == CID
    path.write_bytes(b'\xef\xbb\xbf[profiles.q]\nflow = "x"\nscope = "\xff"\n')
    assert "not UTF-8 text (line 3)" in str(config_error(path, "q"))
    path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf[profiles.p]\n")  # only one mark is dropped
    assert "not valid TOML" in str(config_error(path))


def test_unknown_profile_suggests_close_names(tmp_path: Path) -> None:
    path = write(tmp_path, f"[profiles.prod-graph]\n{CC_SECRET}[profiles.me]\n{DEVICE}")
    error = config_error(path, "prod-grph")
    assert (error.path, error.profile, error.key) == (str(path), "prod-grph", None)
    assert "no profile 'prod-grph' in the file; did you mean 'prod-graph'?" in str(error)


def test_unknown_profile_lists_the_names_when_none_is_close(tmp_path: Path) -> None:
    path = write(tmp_path, f"[profiles.prod-graph]\n{CC_SECRET}[profiles.me]\n{DEVICE}")
    error = config_error(path, "zzz")
    assert "the file has 'prod-graph', 'me'" in str(error)


def test_unknown_profile_in_a_file_without_profiles(tmp_path: Path) -> None:
    path = write(tmp_path, f'[defaults]\ntenant = "{TENANT}"\n')
    assert "no [profiles.NAME] tables" in str(config_error(path))


def test_missing_file_given_as_argument(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    error = config_error(path)
    assert (error.path, error.profile, error.key) == (str(path), None, None)
    assert "does not exist (chosen by the config argument)" in str(error)
    assert "Create it" in str(error)


def test_missing_file_named_by_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTHLAYER_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError) as caught:
        load_profile("p")
    assert caught.value.path == str(tmp_path / "nope.toml")
    assert "chosen by $AUTHLAYER_CONFIG" in str(caught.value)


def test_missing_file_at_the_default_location(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile("p")
    assert caught.value.path == str(config_path())
    assert "chosen by the default location" in str(caught.value)


def test_profiles_file_that_is_a_folder(tmp_path: Path) -> None:
    error = config_error(tmp_path)
    assert error.path == str(tmp_path)
    assert "is a folder" in str(error)


def test_unreadable_profiles_file(tmp_path: Path, deny_read: Callable[[Path], None]) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    deny_read(path)
    error = config_error(path)
    assert "cannot read the profiles file" in str(error)


def test_tenant_override_is_validated(tmp_path: Path) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    error = config_error(path, tenant="not a tenant")
    assert (error.profile, error.key) == ("p", "tenant")
    assert "(from the tenant= argument)" in str(error)


def test_tenant_override_must_fit_the_flow(tmp_path: Path) -> None:
    path = profile_file(tmp_path, MI)
    error = config_error(path, tenant=TENANT)
    assert error.key == "tenant"
    assert "does not apply to flow 'managed_identity'" in str(error)


def test_scope_override_is_validated(tmp_path: Path) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    error = config_error(path, scope=["a b"])
    assert error.key == "scope"
    assert "(from the scope= argument)" in str(error)


def test_no_profile_name_and_no_environment(tmp_path: Path) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    with pytest.raises(ConfigError) as caught:
        load_profile(config=path)
    assert "pass a profile name or set AUTHLAYER_PROFILE" in str(caught.value)
    assert caught.value.profile is None


def test_a_broken_profile_does_not_break_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, f"[profiles.good]\n{CC_SECRET}[profiles.bad]\n{CC_SECRET}timeout = 0\n")
    assert load_profile("good", config=path).name == "good"
    assert profile_names(path) == ["good", "bad"]
    with pytest.raises(ConfigError) as caught:
        load_profiles(path)
    assert (caught.value.profile, caught.value.key) == ("bad", "timeout")


# ------------------------------------------------------------------------------------------
# Secret sources: configured here, read later; their errors name file, profile and key.


def secret_source(tmp_path: Path, source: str, key: str = "client_secret") -> SecretSource:
    path = profile_file(tmp_path, f"{CC}{key} = {source}\n")
    value = getattr(load_profile("p", config=path), key)
    assert isinstance(value, SecretSource)
    return value


def read_error(source: SecretSource) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        source.read()
    return caught.value


def test_inline_secret_is_read_and_not_shown(tmp_path: Path) -> None:
    source = secret_source(tmp_path, q(SECRET))
    assert source.kind == "value"
    assert source.read() == SECRET
    profile = load_profile("p", config=tmp_path / "profiles.toml")
    assert SECRET not in repr(profile)
    assert SECRET not in source.describe()
    assert SECRET not in source.identity


def test_missing_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUTHLAYER_TEST_SECRET", raising=False)
    source = secret_source(tmp_path, '{ env = "AUTHLAYER_TEST_SECRET" }')
    error = read_error(source)
    assert (error.path, error.profile, error.key) == (
        str(tmp_path / "profiles.toml"),
        "p",
        "client_secret",
    )
    assert "environment variable AUTHLAYER_TEST_SECRET is not set" in str(error)
    monkeypatch.setenv("AUTHLAYER_TEST_SECRET", SECRET)
    assert source.read() == SECRET  # read again each time: no load needed


def test_missing_secret_file(tmp_path: Path) -> None:
    source = secret_source(tmp_path, '{ file = "rotated/secret.txt" }')
    error = read_error(source)
    assert (error.profile, error.key) == ("p", "client_secret")
    assert "does not exist" in str(error)
    (tmp_path / "rotated").mkdir()
    (tmp_path / "rotated" / "secret.txt").write_text(SECRET + "\n")
    assert source.read() == SECRET  # a file that appears later is fine


def test_unreadable_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secret-folder").mkdir()
    source = secret_source(tmp_path, '{ file = "secret-folder" }')
    error = read_error(source)
    assert (error.path, error.profile, error.key) == (
        str(tmp_path / "profiles.toml"),
        "p",
        "client_secret",
    )
    assert "cannot read file" in str(error)


def test_relative_secret_file_is_relative_to_the_profiles_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "conf"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "app.txt").write_text(SECRET + "\n")
    path = write(folder, f'[profiles.p]\n{CC}client_secret = {{ file = "secrets/app.txt" }}\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    source = load_profile("p", config=path).client_secret
    assert source is not None
    assert source.ref == str(folder / "secrets" / "app.txt")
    assert source.read() == SECRET


def test_secret_file_with_tilde(tmp_path: Path) -> None:
    source = secret_source(tmp_path, '{ file = "~/secret.txt" }')
    assert source.ref == str(tmp_path / "home" / "secret.txt")


def test_command_source_reads_standard_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('x')"]
    source = secret_source(tmp_path, f"{{ command = {json.dumps(argv)} }}")
    assert source.kind == "command"
    assert source.ref == tuple(argv)
    assert source.read() == "x"


def test_failing_command(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", f"import sys; print({SECRET!r}, file=sys.stderr); sys.exit(3)"]
    source = secret_source(tmp_path, f"{{ command = {json.dumps(argv)} }}")
    error = read_error(source)
    assert (error.profile, error.key) == ("p", "client_secret")
    assert "failed with exit status 3" in str(error)
    assert SECRET not in str(error)


def test_command_printing_nothing(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "pass"]
    source = secret_source(tmp_path, f"{{ command = {json.dumps(argv)} }}")
    error = read_error(source)
    assert (error.profile, error.key) == ("p", "client_secret")
    assert "printed nothing" in str(error)


def test_certificate_table(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "app.pfx").write_bytes(b"\x30\x82")
    path = profile_file(
        tmp_path,
        f'{CC}certificate = {{ path = "certs/app.pfx", password = {{ env = "PFX_PW" }}, '
        'send_x5c = true }\nassertion_alg = "RS256"\n',
    )
    profile = load_profile("p", config=path)
    assert profile.certificate == CertificateConfig(
        path=str(tmp_path / "certs" / "app.pfx"),
        password=SecretSource(
            "env", "PFX_PW", key="certificate.password", profile="p", path=str(path)
        ),
        send_x5c=True,
    )
    assert profile.assertion_alg == "RS256"
    assert profile.client_secret is None


def test_certificate_path_string_with_tilde(tmp_path: Path) -> None:
    (tmp_path / "home" / "app.pem").write_text("x")
    path = profile_file(tmp_path, f'{CC}certificate = "~/app.pem"\n')
    profile = load_profile("p", config=path)
    assert profile.certificate is not None
    assert profile.certificate.path == str(tmp_path / "home" / "app.pem")
    assert profile.certificate.password is None
    assert profile.assertion_alg == "PS256"


def test_unreadable_certificate(tmp_path: Path, deny_read: Callable[[Path], None]) -> None:
    cert = tmp_path / "app.pem"
    cert.write_text("x")
    deny_read(cert)
    error = config_error(profile_file(tmp_path, f'{CC}certificate = "app.pem"\n'))
    assert error.key == "certificate"
    assert "cannot read certificate file" in str(error)


# ------------------------------------------------------------------------------------------
# Good profiles


def test_contract_example(tmp_path: Path) -> None:
    (tmp_path / "home" / "certs").mkdir()
    (tmp_path / "home" / "certs" / "automation.pem").write_text("x")
    path = write(
        tmp_path,
        f"""\
        [defaults]                      # optional; every profile inherits these keys
        tenant = "{TENANT}"

        [profiles.prod-graph]
        flow = "client_credentials"
        client_id = "{CID}"
        client_secret = {{ env = "PROD_GRAPH_SECRET" }}
        scope = "https://graph.microsoft.com/.default"

        [profiles.automation]
        flow = "client_credentials"
        client_id = "{CID}"
        certificate = {{ path = "~/certs/automation.pem" }}
        scope = "https://management.azure.com/.default"

        [profiles.me]
        flow = "device_code"
        client_id = "{CID}"
        tenant = "organizations"
        scope = ["https://graph.microsoft.com/User.Read", "offline_access"]
        """,
    )
    profiles = load_profiles(path)
    assert list(profiles) == ["prod-graph", "automation", "me"]
    graph = profiles["prod-graph"]
    assert graph.tenant == TENANT
    assert graph.config_path == str(path)
    assert graph.client_secret == SecretSource(
        "env", "PROD_GRAPH_SECRET", key="client_secret", profile="prod-graph", path=str(path)
    )
    assert graph.hosts.allows("https", "graph.microsoft.com")
    assert not graph.hosts.allows("https", "evil.example")
    assert profiles["automation"].hosts.allows("https", "management.azure.com")
    me = profiles["me"]
    assert me.tenant == "organizations"
    assert me.scopes == ("https://graph.microsoft.com/User.Read", "offline_access")
    assert me.scope == "https://graph.microsoft.com/User.Read offline_access"


def test_defaults_are_inherited_and_the_profile_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        [defaults]
        tenant = "{TENANT}"
        client_id = "{CID}"
        timeout = 10

        [profiles.p]
        flow = "client_credentials"
        client_secret = {{ env = "S" }}
        scope = "{GRAPH}"
        timeout = 5.5
        """,
    )
    profile = load_profile("p", config=path)
    assert (profile.tenant, profile.client_id, profile.timeout) == (TENANT, CID, 5.5)


def test_defaults_give_each_flow_only_the_keys_that_fit(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        [defaults]
        tenant = "{TENANT}"
        client_id = "{CID}"
        client_secret = {{ env = "S" }}
        prompt = "select_account"
        authority = "https://login.microsoftonline.com"

        [profiles.mi]
        {MI.replace(chr(10), chr(10) + "        ")}
        [profiles.cli]
        flow = "azure_cli"
        scope = "https://management.azure.com/.default"

        [profiles.device]
        {DEVICE.replace(chr(10), chr(10) + "        ")}
        [profiles.web]
        flow = "authorization_code"
        scope = "{GRAPH}"
        """,
    )
    profiles = load_profiles(path)
    mi = profiles["mi"]
    assert (mi.tenant, mi.client_id, mi.client_secret) == (None, None, None)
    cli = profiles["cli"]
    assert (cli.client_id, cli.tenant) == (AZURE_CLI_CLIENT_ID, TENANT)
    device = profiles["device"]
    assert (device.client_secret, device.prompt, device.tenant) == (None, None, TENANT)
    web = profiles["web"]
    assert web.prompt == "select_account"
    assert web.client_secret is not None


def test_extends_chain(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        [defaults]
        tenant = "organizations"
        timeout = 7

        [profiles.base]
        flow = "device_code"
        client_id = "{CID}"
        scope = "{GRAPH}"
        timeout = 8

        [profiles.mid]
        extends = "base"
        tenant = "{TENANT}"

        [profiles.leaf]
        extends = "mid"
        scope = "https://management.azure.com/.default"
        """,
    )
    leaf = load_profile("leaf", config=path)
    assert leaf.flow == "device_code"
    assert leaf.client_id == CID
    assert leaf.tenant == TENANT  # mid beats defaults
    assert leaf.timeout == 8  # base beats defaults
    assert leaf.scopes == ("https://management.azure.com/.default",)  # own key wins
    assert load_profile("base", config=path).tenant == "organizations"


def test_extends_replaces_the_credential_and_the_authority(tmp_path: Path) -> None:
    (tmp_path / "app.pem").write_text("x")
    path = write(
        tmp_path,
        f"""\
        [profiles.secret]
        {CC_SECRET.replace(chr(10), chr(10) + "        ")}cloud = "usgov"

        [profiles.cert]
        extends = "secret"
        certificate = "app.pem"
        authority = "https://login.example.com"
        """,
    )
    cert = load_profile("cert", config=path)
    assert cert.client_secret is None
    assert cert.certificate is not None
    assert cert.authority == "https://login.example.com"
    assert load_profile("secret", config=path).authority == "https://login.microsoftonline.us"


def test_scope_string_and_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        [defaults]
        flow = "device_code"
        client_id = "{CID}"

        [profiles.string]
        scope = "  User.Read   Mail.Read\\toffline_access User.Read "

        [profiles.list]
        scope = ["User.Read", "Mail.Read", "offline_access"]
        """,
    )
    expected = ("User.Read", "Mail.Read", "offline_access")
    assert load_profile("string", config=path).scopes == expected
    assert load_profile("list", config=path).scopes == expected


@pytest.mark.parametrize(
    ("cloud", "authority"),
    [
        ("public", "https://login.microsoftonline.com"),
        ("usgov", "https://login.microsoftonline.us"),
        ("china", "https://login.partner.microsoftonline.cn"),
    ],
)
def test_cloud_shortcuts(tmp_path: Path, cloud: str, authority: str) -> None:
    path = profile_file(tmp_path, f'{CC_SECRET}cloud = "{cloud}"\n')
    assert load_profile("p", config=path).authority == authority


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8400/", "http://127.0.0.1:8400"),
        ("http://localhost:1234", "http://localhost:1234"),
        ("http://[::1]:99//", "http://[::1]:99"),
        ("https://login.example.com/adfs/", "https://login.example.com/adfs"),
        ("https://login.microsoftonline.com/", "https://login.microsoftonline.com"),
    ],
)
def test_authority_accepted(tmp_path: Path, given: str, expected: str) -> None:
    path = profile_file(tmp_path, f'{CC_SECRET}authority = "{given}"\n')
    assert load_profile("p", config=path).authority == expected


def test_default_authority_and_timeout(tmp_path: Path) -> None:
    profile = load_profile("p", config=profile_file(tmp_path, CC_SECRET))
    assert profile.authority == "https://login.microsoftonline.com"
    assert profile.timeout == 30.0


def test_overrides_of_scope_and_tenant(tmp_path: Path) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    other = load_profile(
        "p", config=path, scope="https://management.azure.com/.default", tenant="Fabrikam.COM"
    )
    assert other.scopes == ("https://management.azure.com/.default",)
    assert other.tenant == "fabrikam.com"
    assert other.hosts.allows("https", "management.azure.com")
    assert not other.hosts.allows("https", "graph.microsoft.com")
    listed = load_profile("p", config=path, scope=["https://vault.azure.net/.default"])
    assert listed.hosts.allows("https", "kv1.vault.azure.net")
    plain = load_profile("p", config=path)
    assert (plain.scopes, plain.tenant) == ((GRAPH,), TENANT)


def test_allowed_hosts(tmp_path: Path) -> None:
    path = profile_file(
        tmp_path,
        f"{DEVICE.replace(GRAPH, 'api://my-api/.default')}"
        'allowed_hosts = ["API.example.com", ".example.net", "[::1]"]\n',
    )
    profile = load_profile("p", config=path)
    assert profile.allowed_hosts == ("api.example.com", ".example.net", "::1")
    assert profile.hosts.allows("https", "api.example.com")
    assert profile.hosts.allows("https", "a.example.net")
    assert not profile.hosts.allows("https", "example.org")


def test_profile_name_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, f"[profiles.one]\n{CC_SECRET}[profiles.two]\n{DEVICE}")
    monkeypatch.setenv("AUTHLAYER_PROFILE", "two")
    assert load_profile(config=path).name == "two"
    assert load_profile("one", config=path).name == "one"  # an explicit name wins


@pytest.mark.parametrize(
    ("flow", "body", "cache"),
    [
        ("client_credentials", CC_SECRET, "memory"),
        ("on_behalf_of", CC_SECRET.replace("client_credentials", "on_behalf_of"), "memory"),
        ("device_code", DEVICE, "file"),
        ("authorization_code", DEVICE.replace("device_code", "authorization_code"), "file"),
        (
            "refresh_token",
            CC.replace("client_credentials", "refresh_token") + 'refresh_token = { env = "R" }\n',
            "file",
        ),
        (
            "password",
            CC.replace("client_credentials", "password")
            + 'username = "a@b.c"\npassword = { env = "P" }\n',
            "file",
        ),
        ("managed_identity", MI, "memory"),
        ("workload_identity", MI.replace("managed_identity", "workload_identity"), "memory"),
        ("azure_cli", MI.replace("managed_identity", "azure_cli"), "file"),
        ("azd", MI.replace("managed_identity", "azd"), "memory"),
        ("azure_powershell", MI.replace("managed_identity", "azure_powershell"), "memory"),
        ("auto", MI.replace("managed_identity", "auto"), "memory"),
    ],
)
def test_cache_default_per_flow(tmp_path: Path, flow: str, body: str, cache: str) -> None:
    path = profile_file(tmp_path, body)
    profile = load_profile("p", config=path)
    assert (profile.flow, profile.cache) == (flow, cache)
    chosen = profile_file(tmp_path, body + 'cache = "memory"\n')
    clear_cache()
    assert load_profile("p", config=chosen).cache == "memory"


def test_every_flow_is_covered_by_the_cache_table() -> None:
    covered = {
        "client_credentials",
        "on_behalf_of",
        "device_code",
        "authorization_code",
        "refresh_token",
        "password",
        "managed_identity",
        "workload_identity",
        "azure_cli",
        "azd",
        "azure_powershell",
        "auto",
    }
    # A chain keeps no tokens of its own: its members' caches do.
    assert covered | {"chain"} == set(FLOWS)


def test_authorization_code_keys(tmp_path: Path) -> None:
    path = profile_file(
        tmp_path,
        DEVICE.replace("device_code", "authorization_code")
        + 'redirect_port = 0\nlogin_hint = "me@contoso.com"\ndomain_hint = "contoso.com"\n'
        'prompt = "none"\nclient_assertion = { file = "/var/run/token" }\n',
    )
    profile = load_profile("p", config=path)
    assert profile.redirect_port == 0
    assert (profile.login_hint, profile.domain_hint, profile.prompt) == (
        "me@contoso.com",
        "contoso.com",
        "none",
    )
    assert profile.tenant == "organizations"
    assert profile.client_assertion is not None
    assert profile.credential_identity == "assertion:file:/var/run/token"


def test_managed_identity_user_assigned(tmp_path: Path) -> None:
    rid = (
        "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ManagedIdentity"
        "/userAssignedIdentities/id"
    )
    profile = load_profile("p", config=profile_file(tmp_path, f'{MI}resource_id = "{rid}"\n'))
    assert (profile.resource_id, profile.client_id, profile.tenant) == (rid, None, None)


def test_workload_identity_needs_nothing_more(tmp_path: Path) -> None:
    path = profile_file(tmp_path, MI.replace("managed_identity", "workload_identity"))
    profile = load_profile("p", config=path)
    assert (profile.tenant, profile.client_id, profile.client_assertion) == (None, None, None)


def test_load_profiles_and_names_keep_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, f"[profiles.z]\n{CC_SECRET}[profiles.a]\n{DEVICE}[profiles.m]\n{MI}")
    assert profile_names(path) == ["z", "a", "m"]
    profiles = load_profiles(path)
    assert list(profiles) == ["z", "a", "m"]
    assert all(isinstance(p, Profile) and p.name == n for n, p in profiles.items())


def test_profile_names_of_empty_file(tmp_path: Path) -> None:
    assert profile_names(write(tmp_path, "")) == []


# ------------------------------------------------------------------------------------------
# Where the file is found


def test_config_path_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTHLAYER_CONFIG", str(tmp_path / "from-env.toml"))
    assert config_path(tmp_path / "arg.toml") == tmp_path / "arg.toml"
    assert config_path() == tmp_path / "from-env.toml"
    monkeypatch.setenv("AUTHLAYER_CONFIG", "")  # empty counts as unset
    assert config_path().name == "profiles.toml"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders are Linux's")
def test_config_path_linux_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert config_path() == home / ".config" / "authlayer" / "profiles.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "authlayer" / "profiles.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/xdg")  # invalid per the XDG spec: ignored
    assert config_path() == home / ".config" / "authlayer" / "profiles.toml"


def test_config_path_elsewhere_uses_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.setattr(sys, "platform", "darwin")
    expected = Path(platformdirs.user_config_dir("authlayer", appauthor=False)) / "profiles.toml"
    assert config_path() == expected


def test_config_path_expands_tilde_and_makes_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert config_path("~/p.toml") == tmp_path / "home" / "p.toml"
    monkeypatch.chdir(tmp_path)
    assert config_path("rel.toml") == tmp_path / "rel.toml"
    monkeypatch.setenv("AUTHLAYER_CONFIG", "~/env.toml")
    assert config_path() == tmp_path / "home" / "env.toml"


def test_empty_config_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config argument is empty"):
        config_path("")


def test_environment_file_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    monkeypatch.setenv("AUTHLAYER_CONFIG", str(path))
    assert load_profile("p").config_path == str(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders are Linux's")
def test_default_location_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "authlayer").mkdir(parents=True)
    profile_file(tmp_path / "xdg" / "authlayer", CC_SECRET)
    assert load_profile("p").config_path == str(tmp_path / "xdg" / "authlayer" / "profiles.toml")


def test_working_directory_is_never_searched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cwd = tmp_path / "project"
    cwd.mkdir()
    profile_file(cwd, CC_SECRET)
    (cwd / "authlayer").mkdir()
    profile_file(cwd / "authlayer", CC_SECRET)
    monkeypatch.chdir(cwd)
    assert config_path().parent != cwd
    assert not str(config_path()).startswith(str(cwd))
    with pytest.raises(ConfigError) as caught:
        load_profile("p")
    assert "does not exist" in str(caught.value)
    assert caught.value.path == str(config_path())


# ------------------------------------------------------------------------------------------
# Memoisation


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = _layers._parse

    def counting(path: str) -> Any:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(_layers, "_parse", counting)
    return calls


def test_second_load_does_not_parse_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = count_parses(monkeypatch)
    path = write(tmp_path, f"[profiles.p]\n{CC_SECRET}[profiles.q]\n{DEVICE}")
    first = load_profile("p", config=path)
    assert load_profile("p", config=path) is first
    load_profile("q", config=path)
    profile_names(path)
    load_profiles(path)
    assert len(calls) == 1


def test_edited_file_is_read_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = count_parses(monkeypatch)
    path = profile_file(tmp_path, CC_SECRET)
    assert load_profile("p", config=path).timeout == 30.0
    profile_file(tmp_path, CC_SECRET + "timeout = 12\n")
    assert load_profile("p", config=path).timeout == 12.0
    assert len(calls) == 2


def test_same_size_edit_is_seen_by_its_mtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = count_parses(monkeypatch)
    path = profile_file(tmp_path, CC_SECRET + "timeout = 11\n")
    load_profile("p", config=path)
    before = path.stat()
    profile_file(tmp_path, CC_SECRET + "timeout = 12\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert load_profile("p", config=path).timeout == 12.0
    assert len(calls) == 2


def test_clear_cache_forgets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = count_parses(monkeypatch)
    path = profile_file(tmp_path, CC_SECRET)
    load_profile("p", config=path)
    clear_cache()
    load_profile("p", config=path)
    assert len(calls) == 2


def test_overrides_are_memoised_separately(tmp_path: Path) -> None:
    path = profile_file(tmp_path, CC_SECRET)
    a = load_profile("p", config=path, tenant="fabrikam.com")
    assert load_profile("p", config=path, tenant="fabrikam.com") is a
    assert load_profile("p", config=path).tenant == TENANT


def test_concurrent_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, f"[profiles.p]\n{CC_SECRET}[profiles.q]\n{DEVICE}")
    results: list[Profile] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                results.append(load_profile("p", config=path))
                load_profile("q", config=path, scope="User.Read")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 400
    assert all(r == results[0] for r in results)


# ------------------------------------------------------------------------------------------
# Properties


def test_no_secret_in_any_message(tmp_path: Path) -> None:
    """Secrets in every secret-bearing place, each profile broken some other way."""
    bodies = [
        f"{CC}client_secret = {q(SECRET)}\ncertificate = {q(SECRET)}\n",
        f"{CC}client_secret = {{ env = 'X', value = {q(SECRET)} }}\n",
        f"{CC}clientsecret = {q(SECRET)}\n",
        f"{CC_SECRET}password = {q(SECRET)}\n",
        f"{CC_SECRET}tenant = 'common'\n".replace(f'tenant = "{TENANT}"\n', ""),
        f"{CC}client_secret = {{ command = {q(SECRET)} }}\n",
        f"{CC}client_secret = {{ command = ['', {q(SECRET)}] }}\n",
        f"{DEVICE}refresh_token = {q(SECRET)}\n",
        f"{CC}client_assertion = {q(SECRET)}\nclient_secret = {q(SECRET)}\n",
        f"{CC}client_secret = {q(SECRET + ' ')}\ntimeout = 0\n",
        f"flow = 'password'\nclient_id = '{CID}'\ntenant = 'consumers'\nscope = '{GRAPH}'\n"
        f"username = 'u@x.y'\npassword = {q(SECRET)}\n",
        f"{CC}client_secret = {q(SECRET)}\nauthority = 'http://x:{SECRET}@example.com'\n",
        f'{CC}client_secret = "{SECRET}\n',
    ]
    for number, body in enumerate(bodies):
        path = write(tmp_path, f"[profiles.p]\n{body}", name=f"p{number}.toml")
        error = config_error(path)
        assert SECRET not in str(error), body
        assert error.path == str(path)


_PLAUSIBLE = [
    *FLOWS,
    GRAPH,
    CID,
    TENANT,
    "organizations",
    "common",
    "User.Read offline_access",
    "https://example.com",
    "http://localhost:1",
    "public",
    "PS256",
    "file",
    "login",
    "api.example.com",
    "p",
    "q",
]
_VALUES = st.one_of(
    st.text(max_size=20).map(q),
    st.sampled_from(_PLAUSIBLE).map(q),
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.sampled_from(["true", "false", "1.5", "30", "nan", "-inf", "1979-05-27", "[]", "{}"]),
    st.tuples(
        st.sampled_from(["env", "file", "command", "path", "password", "send_x5c"]),
        st.sampled_from(['"x"', '["x"]', "1", '""', "true"]),
    ).map(lambda kv: f"{{ {kv[0]} = {kv[1]} }}"),
    st.lists(st.sampled_from(_PLAUSIBLE).map(q), max_size=3).map(lambda v: f"[{', '.join(v)}]"),
)
_TABLES = st.dictionaries(st.sampled_from([*KEYS, "bogus"]), _VALUES, max_size=8).map(
    lambda table: "".join(f"{k} = {v}\n" for k, v in table.items())
)
# Mostly valid TOML with the file's own shape, so that validation (not only the parser) is hit.
_SHAPED = st.tuples(
    st.sampled_from(["", "[defaults]\n", "[other]\n"]),
    _TABLES,
    st.sampled_from(["[profiles.p]\n", "[profiles.q]\n", "profiles.p = 1\n"]),
    _TABLES,
    st.sampled_from(["", "[profiles.q]\n", "[profiles.p]\n"]),
    _TABLES,
).map(lambda parts: "".join(parts))
_BASES: list[dict[str, str]] = [
    {
        "flow": q("client_credentials"),
        "client_id": q(CID),
        "tenant": q(TENANT),
        "scope": q(GRAPH),
        "client_secret": '{ env = "S" }',
    },
    {"flow": q("device_code"), "client_id": q(CID), "scope": q(GRAPH)},
    {"flow": q("managed_identity"), "scope": q(GRAPH)},
    {"flow": q("azure_cli"), "scope": q(GRAPH)},
    {
        "flow": q("password"),
        "client_id": q(CID),
        "tenant": q(TENANT),
        "scope": q(GRAPH),
        "username": q("u@example.com"),
        "password": q(SECRET),
    },
]
# A valid profile with a few keys changed: mostly valid, sometimes not, never a crash.
_MUTATED = st.tuples(
    st.sampled_from(_BASES), st.dictionaries(st.sampled_from([*KEYS, "bogus"]), _VALUES, max_size=2)
).map(lambda bc: "[profiles.p]\n" + "".join(f"{k} = {v}\n" for k, v in {**bc[0], **bc[1]}.items()))
_LINES = st.one_of(
    st.sampled_from(["[defaults]", "[profiles.p]", "[profiles.q]", "[other]", ""]),
    st.tuples(st.sampled_from([*KEYS, "bogus", "certificate.path"]), _VALUES).map(
        lambda kv: f"{kv[0]} = {kv[1]}"
    ),
    st.text(max_size=30),
)
_DOCUMENTS = st.one_of(
    st.text(max_size=200),
    st.lists(_LINES, max_size=14).map("\n".join),
    _SHAPED,
    _MUTATED,
    _MUTATED,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_DOCUMENTS)
def test_any_input_gives_a_profile_or_a_config_error(document: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profiles.toml"
        path.write_bytes(document.encode("utf-8", "surrogatepass"))
        clear_cache()
        outcome: Union[Profile, ConfigError]
        try:
            outcome = load_profile("p", config=path)
        except ConfigError as error:
            outcome = error
        if isinstance(outcome, ConfigError):
            assert outcome.path == str(path)
        else:
            assert outcome.flow in FLOWS
        with contextlib.suppress(ConfigError):
            load_profiles(path)
