"""Issue 11, items 17 and 18: what keeps the cached call and the start-up cheap keeps doing
what it did (the costs themselves are measured in benchmarks/, never timed here)."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests

from authlayer import ConfigError, EntraAuth, get_token, provider
from authlayer._log import log
from authlayer.emulator import Emulator
from authlayer.filecache import default_path
from authlayer.jwt import decode
from authlayer.provider import PROVIDER
from authlayer.token import TokenResult

from .conftest import Profiles


def _memo_matches_bindings() -> bool:
    return PROVIDER._memo == {args: b.slot for args, b in PROVIDER._bindings.items()}


def test_the_memo_forgets_the_call_signatures_the_bindings_forget(
    app_profile: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider, "MAX_BINDINGS", 5)
    name = app_profile("m")
    for i in range(10):
        PROVIDER.bind(name, tenant=f"t{i}.example.com")
    assert len(PROVIDER._memo) == 5
    assert _memo_matches_bindings()


def test_a_changed_profiles_file_empties_the_memo_of_its_calls(
    app_profile: Callable[..., str], profiles: Profiles
) -> None:
    first = get_token(app_profile("a"))
    with profiles.path.open("a", encoding="utf-8") as file:  # the file changes under us
        file.write("\n[profiles.b]\nflow = \"managed_identity\"\n")
    PROVIDER.recheck_at = 0.0  # as if a second had passed
    PROVIDER.check_files()
    assert PROVIDER._memo == {}
    assert get_token("a") == first  # the profile is read again; its token is still cached
    assert _memo_matches_bindings()


def test_log_records_name_the_module_that_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="authlayer"):
        log.debug("hello %s", "there")
    [record] = [r for r in caplog.records if r.getMessage() == "hello there"]
    assert record.name == "authlayer"
    assert record.module == "test_perf_paths"  # the caller's, not the lazy logger's


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="elsewhere platformdirs itself answers")
@pytest.mark.parametrize("xdg", [None, "/somewhere/cache"])
def test_the_default_token_cache_is_where_platformdirs_puts_it(
    monkeypatch: pytest.MonkeyPatch, xdg: Optional[str]
) -> None:
    import platformdirs

    monkeypatch.delenv("AUTHLAYER_CACHE_DIR", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    folder = platformdirs.user_cache_dir("authlayer", appauthor=False)
    assert default_path() == os.path.join(os.path.abspath(folder), "tokens.json")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders are Linux's")
def test_a_relative_xdg_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The XDG spec says so; older platformdirs releases took it relative to the working folder.
    monkeypatch.delenv("AUTHLAYER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    expected = os.path.join(os.path.expanduser("~/.cache"), "authlayer", "tokens.json")
    assert default_path() == os.path.abspath(expected)


@pytest.mark.parametrize("form", ["name", "config as str", "config as Path", "profile from env",
                                  "scope", "scope and tenant", "tenant, profile from env",
                                  "tenant", "tenant, config as str"])
def test_a_second_call_is_served_by_the_hot_path(
    form: str, app_profile: Callable[..., str], profiles: Profiles, emu: Emulator,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_token builds its memo key inline, the slow path with provider._args: were they ever
    to differ, every cached call would quietly take the slow path."""
    name = app_profile("hot")
    monkeypatch.setenv("AUTHLAYER_PROFILE", name)
    path = profiles.path
    call = {
        "name": lambda: get_token(name),
        "config as str": lambda: get_token(name, config=str(path)),
        "config as Path": lambda: get_token(name, config=path),
        "profile from env": lambda: get_token(),
        "scope": lambda: get_token(name, scope=emu.api_scope),
        "scope and tenant": lambda: get_token(name, scope=emu.api_scope, tenant=emu.tenant_id),
        "tenant, profile from env": lambda: get_token(tenant=emu.tenant_id),
        "tenant": lambda: get_token(name, tenant=emu.tenant_id),
        "tenant, config as str": lambda: get_token(name, config=str(path), tenant=emu.tenant_id),
    }[form]
    first = call()
    slow: list[None] = []
    monkeypatch.setattr(PROVIDER, "check_files", lambda: slow.append(None))
    PROVIDER.recheck_at = float("inf")  # no file check due: only a memo miss goes slow
    assert call() == first
    assert slow == []


@pytest.mark.parametrize("variable", ["the file", "unset", "empty"])
def test_a_tenant_call_has_a_five_item_key_whatever_names_the_file(
    variable: str, app_profile: Callable[..., str], profiles: Profiles, emu: Emulator,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get_token(name, tenant=...)`` with the file from $AUTHLAYER_CONFIG (the README's form)
    or from the default location has a five-item key, as with ``config=`` given, the
    variable's mark where ``config`` would be: seven items put 50,000 tenants' keys among
    objects the hot path does not read, 100 ns more per call (benchmarks/bench_cliffs.py). An empty
    variable means the default location, as when it is unset; a ``config=""`` is still refused
    after it served a token."""
    name = app_profile("five")
    if variable != "the file":  # the same profiles, in the default location
        default = tmp_path / "xdg" / "authlayer" / "profiles.toml"
        default.parent.mkdir(parents=True)
        default.write_text(profiles.path.read_text(encoding="utf-8"), encoding="utf-8")
        if variable == "unset":
            monkeypatch.delenv("AUTHLAYER_CONFIG")
        else:
            monkeypatch.setenv("AUTHLAYER_CONFIG", "")
    first = get_token(name, tenant=emu.tenant_id)
    (key,) = [args for args in PROVIDER._memo if emu.tenant_id in args]
    assert len(key) == 5
    assert (key[1] is provider._NO_CONFIG) == (variable != "the file")
    PROVIDER.recheck_at = float("inf")
    with monkeypatch.context() as patched:
        patched.setattr(PROVIDER, "check_files", lambda: pytest.fail("took the slow path"))
        assert get_token(name, tenant=emu.tenant_id) == first
    with pytest.raises(ConfigError, match="the config argument is empty"):
        get_token(name, config="", tenant=emu.tenant_id)


def test_the_two_forms_of_a_tenant_key_never_compare_a_path_with_its_bytes() -> None:
    """With the file given as ``config="/x/p.toml"`` and read from $AUTHLAYER_CONFIG (raw:
    ``b"/x/p.toml"``, which hashes as the str does), the two calls' keys hash apart: were
    they compared, ``python -bb`` would raise BytesWarning out of get_token."""
    code = (
        "import os\n"
        "os.environ['AUTHLAYER_CONFIG'] = '/x/p.toml'\n"
        "from authlayer.provider import _args\n"
        "memo = {_args('a', '/x/p.toml', None, 't', None): 'given'}\n"
        "print(memo.get(_args('a', None, None, 't', None)), hash(next(iter(memo)))"
        " == hash(_args('a', None, None, 't', None)))\n"
    )
    done = subprocess.run([sys.executable, "-bb", "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "None False\n", "")


@pytest.mark.parametrize("reader", ["raw", "str"])
def test_a_tenant_key_from_the_environment_equals_no_key_with_config_given(
    reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable's value is never compared with a caller's arguments: not where POSIX
    gives bytes (``raw``), nor where the environment gives a ``str`` (``str``, as on
    Windows), where a key that held the value itself could equal another call's whose
    arguments happen to match it."""
    if reader == "str":
        monkeypatch.setattr(provider, "_env_get", os.environ.get)
        monkeypatch.setattr(provider, "_ENV_CONFIG", "AUTHLAYER_CONFIG")
    monkeypatch.setenv("AUTHLAYER_CONFIG", "/x/p.toml")
    from_env = provider._args("a", None, "a", "u", None)
    assert from_env == provider._args("a", None, "a", "u", None)  # one mark per value
    assert from_env not in {provider._args("a", "a", None, "u", "/x/p.toml"),
                            provider._args("a", "/x/p.toml", "a", "u", None),
                            provider._args("a", "a", "u", None, "/x/p.toml")}
    monkeypatch.setenv("AUTHLAYER_CONFIG", "")  # the default location, as when unset
    assert provider._args("a", None, "a", "u", None)[1] is provider._NO_CONFIG


def test_a_tenant_call_follows_the_variable_as_it_changes(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One profile name in three files, each for another app: as $AUTHLAYER_CONFIG is set,
    changed, emptied and set back in one process, ``get_token("p", tenant=...)`` serves each
    file's own token from the memo, never another's (no file check due to help it)."""
    def write(path: Path) -> str:
        app = emu.register_app(secret="s")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'[profiles.p]\nflow = "client_credentials"\nauthority = "{emu.url}"\n'
            f'tenant = "{emu.tenant_id}"\nclient_id = "{app.client_id}"\n'
            f'client_secret = "s"\nscope = "{emu.api_scope}"\n', encoding="utf-8")
        return str(app.client_id)

    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    default = tmp_path / "xdg" / "authlayer" / "profiles.toml"
    apps = {str(one): write(one), str(two): write(two), "": write(default)}

    def token_for(value: str) -> str:
        monkeypatch.setenv("AUTHLAYER_CONFIG", value)
        token = get_token("p", tenant=emu.tenant_id).token
        assert decode(token)[1].get("appid", decode(token)[1].get("azp")) == apps[value]
        PROVIDER.recheck_at = float("inf")
        return token

    first = [token_for(value) for value in (str(one), str(two), "")]
    assert len(set(first)) == 3
    assert [token_for(value) for value in ("", str(two), str(one))] == first[::-1]
    assert emu.count("token") == 3


@pytest.mark.parametrize("reader", ["raw", "str"])
def test_get_tokens_inline_key_is_args_key_for_every_kind_of_call(
    reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every combination of given and missing arguments, with the variables unset, empty and
    set: the key get_token builds inline is the one ``_args`` stores (the slow path, run
    first, makes a new value's mark; until then the hot path misses, as it should)."""
    if reader == "str":  # as where the environment gives str (Windows)
        monkeypatch.setattr(provider, "_env_get", os.environ.get)
        monkeypatch.setattr(provider, "_ENV_PROFILE", "AUTHLAYER_PROFILE")
        monkeypatch.setattr(provider, "_ENV_CONFIG", "AUTHLAYER_CONFIG")
    built: list[tuple[object, ...]] = []

    class Built(Exception):
        pass

    def capture(args: tuple[object, ...]) -> None:
        built.append(args)
        raise Built

    monkeypatch.setattr(provider, "_memo_get", capture)
    mismatches = []
    for variables in itertools.product([None, "", "q"], [None, "", "/x/p.toml", "a"]):
        for name, value in zip(("AUTHLAYER_PROFILE", "AUTHLAYER_CONFIG"), variables):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        for call in itertools.product([None, "a"], [None, "a", "/x/p.toml", Path("/x/p.toml")],
                                      [None, "a", ("s1", "s2")], [None, "u", "a"],
                                      [None, "a", "t"]):
            stored = provider._args(*call)
            built.clear()
            profile, config, scope, tenant, user_assertion = call
            with pytest.raises(Built):
                get_token(profile, config=config, scope=scope, tenant=tenant,
                          user_assertion=user_assertion)
            if built != [stored]:
                mismatches.append((variables, call, built, stored))
    assert mismatches == []


def test_cached_entries_keep_refresh_on_as_a_float(app_profile: Callable[..., str]) -> None:
    """Every cached call compares refresh_on with the clock's float: float to float costs a
    quarter of float to int, so entries hold a float, whether the token was fetched or read
    from the token cache file (records keep integers)."""
    fetched = app_profile("fetched")
    stored = app_profile("stored", cache="file")
    get_token(fetched)
    assert [type(e.refresh_on) for e in PROVIDER.entries.values()] == [float]
    get_token(stored)  # (the same app and scope: the same token key)
    provider.reset()  # memory forgotten: the file's record is read again
    get_token(stored)
    assert [type(e.refresh_on) for e in PROVIDER.entries.values()] == [float]


def test_entries_due_in_the_same_second_share_one_refresh_time(
    app_profile: Callable[..., str]
) -> None:
    """Thousands of tenants' entries point at a few shared floats (they stay in the
    processor's cache while a cached call cycles through the tenants)."""
    name = app_profile("shared")
    PROVIDER.bind(name)  # the profile's own binding, then three tenants' derived from it
    for i in range(3):
        binding = PROVIDER.bind(name, tenant=f"t{i}.example.com")
        PROVIDER._keep(binding.key, provider.CachedToken.from_result(
            TokenResult(f"token-{i}", 2_000_000_000, 1_999_990_000)))
    times = {id(entry.refresh_on) for entry in PROVIDER.entries.values()}
    assert len(PROVIDER.entries) == 3
    assert len(times) == 1


def test_attaching_a_cached_token_joins_its_header_once(
    app_profile: Callable[..., str], emu: Emulator
) -> None:
    """Entries keep no header (it would hold the token's characters twice, per tenant); the
    slot of a token that is attached keeps the last one joined, so that attaching a cached
    token stays one header assignment, not a 1 kB join per request."""
    name = app_profile("attached")
    auth = EntraAuth(name)
    prepared = [auth(requests.Request("GET", f"{emu.api_url}/me").prepare()) for _ in range(2)]
    slot = auth.binding.slot
    assert slot.entry is not None
    assert slot.joined is not None
    assert prepared[0].headers["Authorization"] is prepared[1].headers["Authorization"]
    assert prepared[0].headers["Authorization"] == "Bearer " + slot.entry.token.token
    fresh = slot.entry._replace(refresh_on=slot.entry.refresh_on + 1)  # another entry
    assert slot.header(fresh) == prepared[0].headers["Authorization"]
    assert slot.joined[0] is fresh
