"""Plugins (CONTRACT §10): another installed package adds a secret source or a flow through an
entry point. The package used here is real: ``tests/plugins/site`` holds it with its
``.dist-info/entry_points.txt``, and the tests put that folder on the path; nothing in authlayer
is monkeypatched."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authlayer import ConfigError, TokenError, get_token, registry
from authlayer.config import load_profile, profile_names
from authlayer.emulator import Emulator

from .conftest import Profiles

SITE = Path(__file__).parent / "plugins" / "site"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The test plugin package, installed (on the path, with its entry points) for one test."""
    registry.forget_plugins()
    monkeypatch.syspath_prepend(str(SITE))
    import authlayer_testplugin

    try:
        yield authlayer_testplugin
    finally:
        registry.forget_plugins()


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch, plugin: Any, secret: str) -> None:
    monkeypatch.setenv(plugin.VAULT_VARIABLE, json.dumps({"kv/app1": secret}))


def cc(emu: Emulator, app: Any, **keys: str) -> str:
    lines = {"flow": '"client_credentials"', "authority": f'"{emu.url}"',
             "tenant": f'"{emu.tenant_id}"', "client_id": f'"{app.client_id}"',
             "scope": f'"{emu.api_scope}"', **keys}
    return "\n".join(f"{k} = {v}" for k, v in lines.items()) + "\n"


# ------------------------------------------------------------------------------------------
# Secret sources


def test_secret_from_a_plugin_source_gets_a_token(emu: Emulator, app: Any, profiles: Profiles,
                                                  vault: None) -> None:
    profiles.write("[profiles.app]\n" + cc(emu, app, client_secret='{ vault = "kv/app1" }'))
    assert get_token("app").token
    assert emu.count("token") == 1


def test_plugin_source_takes_any_toml_value_and_is_described_without_it(
        emu: Emulator, app: Any, profiles: Profiles, vault: None) -> None:
    profiles.write("[profiles.app]\n"
                   + cc(emu, app, client_secret='{ vault = { path = "kv/app1" } }'))
    source = load_profile("app").client_secret
    assert source is not None
    assert source.describe() == "vault source"
    assert source.identity.startswith("vault:")
    assert "kv/app1" not in source.identity
    assert source.blocking
    assert get_token("app").token


def test_a_plugin_sources_error_names_profile_and_key_and_hides_secrets(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any) -> None:
    profiles.write("[profiles.app]\n" + cc(emu, app, client_secret='{ boom = "x" }'))
    with pytest.raises(ConfigError) as caught:
        get_token("app")
    error = caught.value
    assert (error.profile, error.key) == ("app", "client_secret")
    assert "secret source 'boom' failed: RuntimeError" in str(error)
    assert plugin.BOOM_TOKEN not in str(error)
    assert plugin.BOOM_PASSWORD not in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_a_plugin_source_that_gives_no_string_is_a_config_error(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any) -> None:
    profiles.write("[profiles.app]\n" + cc(emu, app, client_secret='{ nothing = "x" }'))
    with pytest.raises(ConfigError, match="secret source 'nothing' gave NoneType: it must give"):
        get_token("app")


def test_a_broken_plugin_breaks_only_the_profiles_that_use_it(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any, secret: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_SECRET", secret)
    profiles.write("[profiles.good]\n" + cc(emu, app, client_secret='{ env = "APP_SECRET" }')
                   + "[profiles.bad]\n" + cc(emu, app, client_secret='{ broken = "x" }'))
    with pytest.raises(ConfigError) as caught:
        load_profile("bad")
    assert (caught.value.profile, caught.value.key) == ("bad", "client_secret")
    assert "secret source 'broken' comes from package authlayer-testplugin 1.0, which could " \
        "not be loaded: ModuleNotFoundError" in str(caught.value)
    assert get_token("good").token


def test_unknown_source_suggests_a_plugins_name(profiles: Profiles, plugin: Any, emu: Emulator,
                                                app: Any) -> None:
    profiles.write("[profiles.app]\n" + cc(emu, app, client_secret='{ valt = "kv/app1" }'))
    with pytest.raises(ConfigError, match=re.escape(
            "unknown key 'valt' in client_secret; did you mean 'vault'?")):
        load_profile("app")


def test_a_plugin_cannot_replace_a_builtin_source(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any, secret: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("APP_SECRET", secret)
    profiles.write("[profiles.app]\n" + cc(emu, app, client_secret='{ env = "APP_SECRET" }'))
    assert get_token("app").token  # the built-in env source, not the plugin's `boom`
    with caplog.at_level(logging.WARNING, logger="authlayer"):
        assert "env" in registry.secret_source_names()
    assert "plugin entry point 'env' (package authlayer-testplugin 1.0) ignored: a built-in " \
        "has that name" in caplog.text


# ------------------------------------------------------------------------------------------
# Flows


def emu_app(emu: Emulator, app: Any, **keys: str) -> str:
    return cc(emu, app, **{"flow": '"emu_app"', "client_secret": '{ vault = "kv/app1" }',
                           **keys})


def test_a_plugin_flow_gets_a_token_end_to_end(emu: Emulator, app: Any, profiles: Profiles,
                                               vault: None) -> None:
    profiles.write("[profiles.mine]\n" + emu_app(emu, app, app_note='"from the plugin"'))
    profile = load_profile("mine")
    assert profile.flow == "emu_app"
    assert profile.extra_key("app_note") == "from the plugin"
    assert get_token("mine").token
    assert emu.count("token") == 1


def test_a_plugin_flow_is_checked_like_a_builtin(emu: Emulator, app: Any, profiles: Profiles,
                                                 vault: None) -> None:
    profiles.write("[profiles.mine]\n" + emu_app(emu, app, app_note="3")
                   + "[profiles.other]\n" + emu_app(emu, app, redirect_port="8400"))
    with pytest.raises(ConfigError, match="app_note must be a string, not an integer"):
        load_profile("mine")
    with pytest.raises(ConfigError, match="redirect_port does not apply to flow 'emu_app'"):
        load_profile("other")


def test_a_plugin_flows_own_key_is_unknown_to_other_flows(
        emu: Emulator, app: Any, profiles: Profiles, vault: None) -> None:
    profiles.write("[profiles.app]\n" + cc(emu, app, client_secret='"x"', app_note='"n"'))
    with pytest.raises(ConfigError, match="unknown key 'app_note'"):
        load_profile("app")


def test_a_plugin_flow_that_fails_raises_a_token_error_naming_the_profile(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any) -> None:
    profiles.write("[profiles.x]\n" + cc(emu, app, flow='"exploding"', client_secret='"s"'))
    with pytest.raises(TokenError) as caught:
        get_token("x")
    assert caught.value.profile == "x"
    assert caught.value.error == "plugin_failed"
    assert "flow 'exploding' failed: ValueError" in str(caught.value)
    assert plugin.BOOM_TOKEN not in str(caught.value)


@pytest.mark.parametrize(("flow", "says"), [
    ("broken_flow", "flow 'broken_flow' from package authlayer-testplugin 1.0 is str, not a "
                    "FlowSpec"),
    ("missing_flow", "flow 'missing_flow' comes from package authlayer-testplugin 1.0, which "
                     "could not be loaded: ModuleNotFoundError"),
])
def test_a_broken_plugin_flow_is_a_config_error_naming_the_package(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any, flow: str, says: str) -> None:
    profiles.write("[profiles.x]\n" + cc(emu, app, flow=f'"{flow}"', client_secret='"s"'))
    with pytest.raises(ConfigError) as caught:
        load_profile("x")
    assert (caught.value.profile, caught.value.key) == ("x", "flow")
    assert says in str(caught.value)


def test_unknown_flow_suggests_a_plugin_flow(emu: Emulator, app: Any, profiles: Profiles,
                                             plugin: Any) -> None:
    profiles.write("[profiles.x]\n" + cc(emu, app, flow='"emu_ap"', client_secret='"s"'))
    with pytest.raises(ConfigError, match=re.escape(
            "unknown flow 'emu_ap'; did you mean 'emu_app'?")):
        load_profile("x")


def test_a_plugin_cannot_replace_a_builtin_flow(emu: Emulator, app: Any, profiles: Profiles,
                                                plugin: Any) -> None:
    profiles.write("[profiles.x]\n" + cc(emu, app, client_secret='"s"'))
    assert registry.flow("client_credentials") is importlib.import_module(
        "authlayer.flows.client_credentials").FLOW
    assert registry.flow_names().count("client_credentials") == 1
    assert load_profile("x").flow == "client_credentials"


def test_profiles_of_builtin_flows_and_sources_never_look_for_plugins(
        emu: Emulator, app: Any, profiles: Profiles, plugin: Any, secret: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    looked: list[Any] = []
    real = importlib.metadata.entry_points

    def counting(**kwargs: Any) -> Any:
        looked.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    monkeypatch.setenv("APP_SECRET", secret)
    profiles.write("[profiles.a]\n" + cc(emu, app, client_secret='{ env = "APP_SECRET" }')
                   + "[profiles.b]\n" + cc(emu, app, client_secret='"inline"', cache='"file"')
                   + "[profiles.c]\n" + cc(emu, app, client_secret='{ file = "s.txt" }'))
    for name in profile_names():
        load_profile(name)
    assert get_token("a").token
    assert looked == []


def test_cli_lists_plugin_flows_like_builtins_and_broken_ones_apart(
        tmp_path: Path, emu: Emulator, app: Any) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text("[profiles.mine]\n" + emu_app(emu, app)
                    + "[profiles.bad]\n" + cc(emu, app, flow='"missing_flow"',
                                              client_secret='"s"')
                    + "[profiles.app]\n" + cc(emu, app, client_secret='"s"'), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SITE), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "authlayer", "profiles", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:]}
    assert rows == {"mine": "emu_app", "bad": "(invalid:", "app": "client_credentials"}
    assert "profile 'bad', key 'flow': flow 'missing_flow' comes from package " \
        "authlayer-testplugin 1.0" in done.stderr
    assert done.returncode == 2
