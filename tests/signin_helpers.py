"""Helpers shared by the tests of the flows that sign a person in: people, public apps,
profiles, a device-code approver and an in-process test browser."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx

from authlayer.emulator import Emulator
from authlayer.emulator.device import device_codes

from .conftest import Profiles


def new_person(emu: Emulator, password: Optional[str] = None) -> str:
    """A person with a unique name in the emulator's default tenant."""
    username = f"user-{uuid.uuid4().hex[:8]}@contoso.onmicrosoft.com"
    emu.add_user(username, password)
    return username


def write_profile(profiles: Profiles, emu: Emulator, name: str, flow: str, *, client_id: str,
                  cache: str = "memory", scope: Optional[str] = None, **keys: Any) -> str:
    """A profile for the emulator's protected API; extra keys are written as TOML values."""
    lines = [f"[profiles.{name}]", f'flow = "{flow}"', f'authority = "{emu.url}"',
             f'tenant = "{emu.tenant_id}"', f'client_id = "{client_id}"',
             f'scope = "{scope or emu.api_scope}"', f'cache = "{cache}"', "timeout = 5"]
    for key, value in keys.items():
        if isinstance(value, str) and not value.startswith("{"):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    profiles.write("\n".join(lines) + "\n")
    return name


class Approver:
    """A ``prompt=`` callback that plays the person: it approves the newest device code
    through the emulator's controls (or declines, or does nothing) and keeps the messages."""

    def __init__(self, emu: Emulator, username: str, action: str = "approve") -> None:
        self.emu = emu
        self.username = username
        self.action = action
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        controls = device_codes(self.emu)
        if self.action == "approve":
            controls.approve(username=self.username)
        elif self.action != "nothing":
            getattr(controls, self.action)()


def approve_in_background(emu: Emulator, username: str) -> threading.Thread:
    """A thread that waits for a pending device code and approves it."""

    def run() -> None:
        code = device_codes(emu).wait_for_pending(10)
        device_codes(emu).approve(code.user_code, username=username)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def with_query(url: str, **changes: Optional[str]) -> str:
    """``url`` with some query parameters replaced (``None`` removes one)."""
    split = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return urlunsplit(split._replace(query=urlencode(params)))


class TestBrowser:
    """Stands in for ``webbrowser.open``: follows the authorize URL to the emulator and its
    302 back to the loopback listener, like a browser would.

    ``visit=False`` opens nothing (the person walks away); ``detours`` are query changes sent
    to the listener first (a wrong or missing ``state``), whose answers are kept in
    ``detour_statuses``.
    """

    __test__ = False  # not a test class, despite its name

    def __init__(self, *, visit: bool = True,
                 detours: tuple[dict[str, Optional[str]], ...] = (),
                 during: Optional[Callable[[str], None]] = None) -> None:
        self.visit = visit
        self.detours = detours
        self.during = during
        self.urls: list[str] = []
        self.redirects: list[str] = []
        self.pages: list[tuple[int, str]] = []
        self.detour_statuses: list[int] = []

    def __call__(self, url: str, *args: Any, **kwargs: Any) -> bool:
        self.urls.append(url)
        if not self.visit:
            return True
        with httpx.Client(timeout=5, trust_env=False) as client:
            answer = client.get(url)
            assert answer.status_code == 302, answer.text
            location = answer.headers["location"]
            self.redirects.append(location)
            if self.during is not None:
                self.during(location)
            for changes in self.detours:
                self.detour_statuses.append(client.get(with_query(location, **changes))
                                            .status_code)
            page = client.get(location)
            self.pages.append((page.status_code, page.text))
        return True
