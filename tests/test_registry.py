"""The flow registry: each built-in flow declares itself once, next to its code, and the rest of
authlayer reads that declaration."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import pytest

from authlayer import registry
from authlayer.profile import FLOWS
from authlayer.schema import CLIENT, COMMON

# What each built-in flow declares (seams design §2): keys, required keys, credential, default
# tenant, refused tenants, file cache by default, cache key names the profile, may prompt.
MULTI = ("organizations", "common", "consumers")
TABLE: dict[str, dict[str, Any]] = {
    "client_credentials": dict(keys=COMMON | CLIENT, required=("client_id", "tenant"),
                               credential="one", refused_tenants=MULTI),
    "on_behalf_of": dict(keys=COMMON | CLIENT, required=("client_id", "tenant"),
                         credential="one", needs_user_assertion=True),
    "authorization_code": dict(
        keys=COMMON | CLIENT | {"redirect_port", "login_hint", "domain_hint", "prompt"},
        required=("client_id",), credential="optional", default_tenant="organizations",
        file_cache=True, names_profile=True, may_prompt=True),
    "device_code": dict(keys=COMMON | {"tenant", "client_id"}, required=("client_id",),
                        default_tenant="organizations", file_cache=True, names_profile=True,
                        may_prompt=True),
    "refresh_token": dict(keys=COMMON | CLIENT | {"refresh_token"},
                          required=("client_id", "tenant", "refresh_token"),
                          credential="optional", file_cache=True, names_profile=True),
    "password": dict(keys=COMMON | CLIENT | {"username", "password"},
                     required=("client_id", "tenant", "username", "password"),
                     credential="optional", refused_tenants=("common", "consumers"),
                     file_cache=True),
    "managed_identity": dict(
        keys=frozenset({"flow", "scope", "allowed_hosts", "cache", "timeout", "client_id",
                        "object_id", "resource_id"}),
        not_from_defaults=frozenset({"client_id"}), ignores_requested_tenant=True),
    "workload_identity": dict(keys=COMMON | {"tenant", "client_id", "client_assertion"},
                              credential="optional"),
    "azure_cli": dict(keys=COMMON | {"tenant", "client_id", "username", "azure_config_dir"},
                      not_from_defaults=frozenset({"client_id"}), file_cache=True,
                      default_client_id="04b07795-8ddb-461a-bbee-02f9e1bf7b46"),
    "azd": dict(keys=frozenset({"flow", "scope", "tenant", "allowed_hosts", "cache",
                                "timeout", "additionally_allowed_tenants"})),
    "azure_powershell": dict(keys=frozenset({"flow", "scope", "tenant", "allowed_hosts",
                                             "cache", "timeout",
                                             "additionally_allowed_tenants"})),
    "chain": dict(keys=frozenset({"flow", "chain", "scope", "allowed_hosts", "cae",
                                  "additionally_allowed_tenants"}), required=("chain",),
                  stands_for="chain"),
    "auto": dict(keys=COMMON | {"tenant", "azure_config_dir"}, stands_for="auto"),
}
DEFAULTS: dict[str, Any] = dict(
    required=(), credential="none", default_tenant=None, refused_tenants=(),
    default_client_id=None, not_from_defaults=frozenset(), file_cache=False, names_profile=False,
    may_prompt=False, ignores_requested_tenant=False, needs_user_assertion=False,
    stands_for=None,
)
# Flows whose cache key has a part of their own (whose sign-in, which password).
WITH_IDENTITY = {"password", "managed_identity", "azure_cli"}


ORDER = ("client_credentials", "device_code", "authorization_code", "refresh_token",
         "on_behalf_of", "password", "managed_identity", "workload_identity", "azure_cli",
         "azd", "azure_powershell", "chain", "auto")


def test_every_builtin_flow_is_registered_in_the_listed_order() -> None:
    assert registry.flow_names() == ORDER
    assert registry.flow_names() == FLOWS


@pytest.mark.parametrize("name", list(TABLE))
def test_builtin_flow_declares_what_the_rest_of_authlayer_needs(name: str) -> None:
    spec = registry.flow(name)
    assert spec.name == name
    for attribute, expected in {**DEFAULTS, **TABLE[name]}.items():
        assert getattr(spec, attribute) == expected, attribute
    assert (spec.identity is not None) == (name in WITH_IDENTITY)
    assert spec.summary


@pytest.mark.parametrize("name", list(TABLE))
def test_flow_spec_is_the_one_its_module_declares(name: str) -> None:
    module = importlib.import_module(f"authlayer.flows.{name}")
    assert registry.flow(name) is module.FLOW
    assert module.FLOW.acquire is module.acquire


def test_managed_identity_takes_one_identity_selector() -> None:
    (rule,) = registry.flow("managed_identity").at_most_one
    assert rule.keys == ("client_id", "object_id", "resource_id")


def test_a_name_that_is_no_flow_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        registry.flow("client_credential")


def test_flows_taking_a_key_are_listed_in_registry_order() -> None:
    assert registry.flows_taking("redirect_port") == ["authorization_code"]
    assert registry.flows_taking("object_id") == ["managed_identity"]
    assert registry.flows_taking("username") == ["password", "azure_cli"]
    assert registry.flows_taking("scope") == list(ORDER)


def test_importing_config_imports_no_flow() -> None:
    code = ("import sys, authlayer, authlayer.config; "
            "print(','.join(sorted(m for m in sys.modules if m.startswith('authlayer.flows.')"
            " and not m.startswith('authlayer.flows._'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_every_key_of_the_table_lands_in_a_profile_field() -> None:
    from dataclasses import fields

    from authlayer.config._keys import TABLE
    from authlayer.profile import Profile

    names = {f.name for f in fields(Profile)}
    for key in TABLE:
        if key.parse is not None:
            assert key.attribute in names, key.name


def test_every_key_a_flow_takes_is_in_the_table() -> None:
    from authlayer.config import KEYS

    for name in registry.flow_names():
        assert registry.flow(name).keys <= set(KEYS), name
