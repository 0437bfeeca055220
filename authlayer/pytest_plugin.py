"""authlayer's pytest plugin: an Entra ID emulator, profiles for it and a clean environment, so
that a test suite needs no fixture code of its own.

Installed with the package (the ``pytest11`` entry point ``authlayer``) and inert until a test
asks for one of its fixtures: importing this module imports neither the emulator nor an HTTP
client. Turn it off with ``-p no:authlayer``.

``entra_emulator``
    a running :class:`authlayer.emulator.Emulator` on a free loopback port, fresh for each test
    and stopped afterwards.
``authlayer_profile``
    a factory, ``authlayer_profile(name="test", flow="client_credentials", *, roles=None,
    **keys) -> str``: registers an app on the emulator for the flow (a confidential one with a
    secret, or a public one for the flows that sign a person in), writes the profile into a
    profiles file of the test's own and returns its name. ``keys`` are profile keys that replace
    or add to the written ones (``scope=...``, ``cache="memory"``; ``None`` leaves a key out).
``entra_user``
    a person (``alice@<tenant domain>``, with a password) whose sign-ins succeed by themselves:
    device codes are approved as soon as they are issued, and browser sign-ins go through
    (``$BROWSER`` is a small program that follows the sign-in URL). The flows that sign a
    person in use it without being asked.
``authlayer_env``
    the isolation the others use: no ``AZURE_*``/``AUTHLAYER_*`` (or managed identity, CI
    token, ``BROWSER``) variable of the developer's shell, ``$AUTHLAYER_CONFIG`` pointing at the
    test's profiles file, ``$AUTHLAYER_CACHE_DIR`` and ``$AZURE_CONFIG_DIR`` at empty temporary
    folders, and :func:`authlayer.reset` before and after the test.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["AuthlayerEnv", "authlayer_env", "authlayer_profile", "entra_emulator", "entra_user"]

# Variables that would make authlayer (or the Azure tools it borrows from) act on the
# developer's own identity instead of the test's.
_FOREIGN_PREFIXES = ("AZURE_", "AUTHLAYER_", "MSI_", "IDENTITY_", "IMDS_", "ACTIONS_ID_TOKEN_")
_FOREIGN_NAMES = ("BROWSER", "SYSTEM_OIDCREQUESTURI", "SYSTEM_ACCESSTOKEN")

APP_FLOWS = ("client_credentials", "on_behalf_of")
PERSON_FLOWS = ("device_code", "authorization_code", "password", "refresh_token")


@dataclass
class AuthlayerEnv:
    """Where a test's authlayer files live (all under the test's ``tmp_path``)."""

    folder: Path
    config: Path
    """The profiles file ``$AUTHLAYER_CONFIG`` names (written by ``authlayer_profile``)."""
    cache_dir: Path
    """``$AUTHLAYER_CACHE_DIR``: the persistent token cache."""
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The profiles written so far, by name (what is in :attr:`config`)."""


@pytest.fixture
def authlayer_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthlayerEnv]:
    """No authlayer or Azure setting of the developer's shell, files in a temporary folder, and
    authlayer's in-process state forgotten before and after the test."""
    from . import reset

    for name in list(os.environ):
        if name.upper().startswith(_FOREIGN_PREFIXES) or name.upper() in _FOREIGN_NAMES:
            monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "authlayer"
    env = AuthlayerEnv(folder, folder / "profiles.toml", folder / "cache")
    (folder / "azure").mkdir(parents=True)
    monkeypatch.setenv("AUTHLAYER_CONFIG", str(env.config))
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", str(env.cache_dir))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(folder / "azure"))
    reset()
    try:
        yield env
    finally:
        reset()


@pytest.fixture
def entra_emulator(authlayer_env: AuthlayerEnv) -> Iterator[Emulator]:
    """A running Entra ID emulator on loopback, stopped after the test."""
    from .emulator import Emulator

    with Emulator() as emu:
        yield emu


@pytest.fixture
def entra_user(entra_emulator: Emulator, authlayer_env: AuthlayerEnv,
               monkeypatch: pytest.MonkeyPatch) -> str:
    """A person whose device code and browser sign-ins succeed without anyone's help; returns
    the user name."""
    from .emulator.authorize import authorize_controls
    from .emulator.device import device_codes

    emu = entra_emulator
    username = f"alice@{emu.tenant_domain}"
    emu.add_user(username, "pw-" + secrets.token_urlsafe(12))
    codes = device_codes(emu)
    codes.auto_approve = username
    codes.interval = 0  # authlayer polls once a second at most anyway
    authorize_controls(emu).sign_in_as(username)
    if os.name == "posix":
        import webbrowser

        monkeypatch.setenv("BROWSER", str(_browser(authlayer_env.folder)))
        # webbrowser reads $BROWSER once per process: make it read it again (undone after).
        monkeypatch.setattr(webbrowser, "_tryorder", None, raising=False)
        monkeypatch.setattr(webbrowser, "_browsers", {}, raising=False)
    return username


_BROWSER = '''
    """A browser for tests: follows the sign-in URL and its redirect back to the app."""
    import sys
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    with opener.open(sys.argv[1], timeout=30) as page:
        page.read()
'''


def _browser(folder: Path) -> Path:
    script = folder / "browser.py"
    script.write_text(textwrap.dedent(_BROWSER), encoding="utf-8")
    launcher = folder / "authlayer-test-browser"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n',
                        encoding="utf-8")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return launcher


@pytest.fixture
def authlayer_profile(entra_emulator: Emulator, authlayer_env: AuthlayerEnv,
                      request: pytest.FixtureRequest) -> Callable[..., str]:
    """``authlayer_profile(name="test", flow="client_credentials", *, roles=None, **keys)``:
    a profile for the emulator, in the test's profiles file; returns its name."""

    def write(name: str = "test", flow: str = "client_credentials", *,
              roles: Optional[Sequence[str]] = None, **keys: Any) -> str:
        emu = entra_emulator
        values: dict[str, Any] = {"flow": flow, "authority": emu.url,
                                  "tenant": emu.tenant_id, "scope": emu.api_scope}
        values.update(_credentials(emu, flow, roles, request, authlayer_env, name))
        values.update(keys)
        authlayer_env.profiles[name] = {k: v for k, v in values.items() if v is not None}
        text = "\n".join(
            f"[profiles.{_key(profile)}]\n"
            + "".join(f"{_key(k)} = {_toml(v, authlayer_env.config, profile, k)}\n"
                      for k, v in body.items())
            for profile, body in authlayer_env.profiles.items())
        authlayer_env.folder.mkdir(parents=True, exist_ok=True)
        authlayer_env.config.write_text(text, encoding="utf-8")
        from .config import clear_cache

        clear_cache()
        return name

    return write


def _credentials(emu: Emulator, flow: str, roles: Optional[Sequence[str]],
                 request: pytest.FixtureRequest, env: AuthlayerEnv, name: str) -> dict[str, Any]:
    """The app (and person) a profile of ``flow`` needs, registered on the emulator."""
    if flow in APP_FLOWS:
        secret = "emu-" + secrets.token_urlsafe(24)
        app = emu.register_app(secret=secret, roles=tuple(roles or ("Data.Read",)))
        return {"client_id": app.client_id, "client_secret": secret}
    if flow not in PERSON_FLOWS:
        from .errors import ConfigError

        raise ConfigError(
            f"authlayer_profile writes profiles of the flows {', '.join(APP_FLOWS + PERSON_FLOWS)}"
            f" for the emulator, not {flow!r}: write that profile's keys yourself",
            path=str(env.config), profile=name, key="flow")
    username = str(request.getfixturevalue("entra_user"))
    app = emu.register_app(public=True, roles=tuple(roles or ()))
    values: dict[str, Any] = {"client_id": app.client_id}
    if flow == "password":
        person = emu.state.find_user(emu.tenant_id, username)
        assert person is not None
        values.update(username=username, password=person.password)
    elif flow == "refresh_token":
        from .emulator.users import mint_refresh_token

        values["refresh_token"] = mint_refresh_token(
            emu, client_id=app.client_id, username=username,
            scope=f"{emu.api_scope} offline_access")
    return values


def _key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else json.dumps(name)


def _toml(value: Any, path: Path, profile: str, key: str) -> str:
    """``value`` as a TOML value (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        return json.dumps(os.fspath(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_toml(v, path, profile, key)}"
                                for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v, path, profile, key) for v in value) + "]"
    from .errors import ConfigError

    raise ConfigError(f"authlayer_profile cannot write a {type(value).__name__} as a TOML value "
                      "(use a string, number, boolean, list or dict)",
                      path=str(path), profile=profile, key=key)
