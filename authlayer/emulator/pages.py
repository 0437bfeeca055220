"""The sign-in pages a person sees: plain server-rendered HTML, no script, no external asset.

The device code page (``/devicelogin``, in ``device.py``) and the browser sign-in page
(``/{tenant}/oauth2/v2.0/authorize``, in ``authorize.py``) are rendered here, with the pages
that end a sign-in and the error page. Every form carries a one-use *page nonce* that the
server issued with the page and keeps (with what the page was about), and a form whose
``Origin`` is another site is refused: enough against cross-site form posts for an emulator on
loopback. Handlers keep the logic; this module only renders and keeps the nonces.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from .wire import Request, Response, text_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = [
    "PageNonces",
    "account_form",
    "code_form",
    "cross_site",
    "error_page",
    "message_page",
    "page",
    "page_nonces",
    "people_in",
    "same_origin",
    "scope_lines",
]

NONCE_LIFETIME = 600  # seconds a page may stay open before its form is refused
MAX_NONCES = 1000  # a long-running emulator keeps at most this many open pages

# Pages may not be framed, load nothing from elsewhere and run no script.
_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),  # "no-referrer" would make Origin "null"
    ("X-Content-Type-Options", "nosniff"),
]

_STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; background: #eef1f5; color: #1b1f24;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; display: flex; align-items: flex-start; justify-content: center; }
main { background: #fff; width: 100%; max-width: 30rem; margin: 3rem 1rem; padding: 2rem 2.25rem;
  border-radius: 10px; box-shadow: 0 2px 10px rgba(0, 0, 0, .12); }
.brand { margin: 0 0 1.25rem; font-size: .8rem; letter-spacing: .04em; text-transform: uppercase;
  color: #5a6270; }
.brand strong { color: #1b1f24; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 .75rem; }
p { margin: 0 0 1rem; }
label { display: block; font-weight: 600; margin: 0 0 .35rem; }
input[type=text] { display: block; width: 100%; font: inherit; padding: .6rem .75rem;
  border: 1px solid #8a929e; border-radius: 6px; background: #fff; color: inherit; }
input.code { font: 600 1.4rem/1.2 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  letter-spacing: .15em; text-transform: uppercase; }
.hint { font-size: .875rem; color: #4a5260; margin: .4rem 0 1rem; }
.hint span { white-space: nowrap; }
.error { border-left: 4px solid #b42318; background: #fdecea; color: #7a1810;
  padding: .6rem .8rem; border-radius: 4px; margin: 0 0 1rem; }
.facts { margin: 0 0 1rem; padding: .75rem 1rem; background: #f5f7fa; border-radius: 6px; }
.facts dt { font-size: .8rem; color: #4a5260; }
.facts dd { margin: 0 0 .4rem; overflow-wrap: anywhere; }
.facts dd:last-child { margin-bottom: 0; }
ul.scopes { margin: .25rem 0 0; padding-left: 1.2rem; }
ul.scopes code { font-size: .85em; overflow-wrap: anywhere; }
.buttons { display: flex; gap: .75rem; margin-top: 1.25rem; }
button { font: inherit; font-weight: 600; padding: .6rem 1.4rem; border-radius: 6px;
  cursor: pointer; border: 1px solid #0b5cad; }
button.primary { background: #0b5cad; color: #fff; }
button.secondary { background: #fff; color: #0b5cad; }
input:focus-visible, button:focus-visible { outline: 3px solid #f0a202; outline-offset: 2px; }
.ok h1::before { content: "\\2713  "; color: #157f3b; }
.stop h1::before { content: "\\2715  "; color: #b42318; }
footer { margin-top: 1.5rem; font-size: .8rem; color: #5a6270; }
"""


def esc(value: object) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str, *, status: int = 200, kind: str = "") -> Response:
    """A whole page: ``body`` is trusted HTML (escape what goes into it)."""
    css_class = f' class="{esc(kind)}"' if kind else ""
    text = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)} - authlayer emulator</title>\n<style>{_STYLE}</style>\n</head>\n"
        f'<body>\n<main{css_class}>\n<p class="brand"><strong>authlayer emulator</strong> · '
        "test sign-in</p>\n"
        f"{body}\n"
        "<footer>A local emulator of Microsoft Entra ID: nothing here leaves this computer."
        "</footer>\n</main>\n</body>\n</html>\n"
    )
    return text_response(text, status=status, content_type="text/html; charset=utf-8",
                         headers=_HEADERS)


def message_page(title: str, lines: Iterable[str], *, status: int = 200,
                 kind: str = "ok") -> Response:
    """A page that ends a sign-in: a heading and paragraphs (plain text, escaped here)."""
    body = f"<h1>{esc(title)}</h1>\n" + "\n".join(f"<p>{esc(line)}</p>" for line in lines)
    return page(title, body, status=status, kind=kind)


def error_page(code: int, message: str, *, status: int = 400,
               title: str = "Sorry, but we're having trouble signing you in.") -> Response:
    """Entra's kind of error page: what went wrong, with its AADSTS number."""
    body = (f"<h1>{esc(title)}</h1>\n"
            f'<p class="error" role="alert">AADSTS{code}: {esc(message)}</p>\n'
            "<p>Close this window and start the sign-in again.</p>")
    return page("Sign-in error", body, status=status, kind="stop")


def cross_site() -> Response:
    """The answer to a form posted from another site's page."""
    return message_page("This form came from another site", [
        "The emulator only accepts its own sign-in forms. Start the sign-in again from the "
        "app."], status=403, kind="stop")


def _error(error: Optional[str]) -> str:
    return f'<p class="error" role="alert">{esc(error)}</p>\n' if error else ""


def code_form(action: str, nonce: str, *, code: str = "", error: Optional[str] = None,
              status: int = 200) -> Response:
    """Step one of a device code sign-in: type the code the other device shows."""
    body = (
        "<h1>Enter code</h1>\n"
        "<p>Type the code shown on the device or in the terminal you are signing in to.</p>\n"
        f"{_error(error)}"
        f'<form method="post" action="{esc(action)}">\n'
        f'<input type="hidden" name="nonce" value="{esc(nonce)}">\n'
        '<label for="code">Code</label>\n'
        f'<input type="text" id="code" name="user_code" class="code" value="{esc(code)}" '
        'autofocus required autocomplete="off" autocapitalize="characters" spellcheck="false" '
        'aria-describedby="code-hint">\n'
        '<p class="hint" id="code-hint">Nine letters and digits, like ABCD2EFGH.</p>\n'
        '<div class="buttons"><button type="submit" class="primary">Next</button></div>\n'
        "</form>"
    )
    return page("Enter code", body, status=status)


# What the OpenID scopes mean to a person; other scopes are shown as they are.
_OIDC_WORDS = {
    "openid": "Sign you in",
    "profile": "See your name and basic profile",
    "email": "See your email address",
    "offline_access": "Keep access while you are away (a refresh token)",
}


def scope_lines(scope: str) -> list[str]:
    """HTML list items for the scopes an app asks for."""
    items: list[str] = []
    for word in dict.fromkeys(scope.split()):
        words = _OIDC_WORDS.get(word)
        if words is not None:
            items.append(f"<li>{esc(words)}</li>")
        elif word.endswith("/.default"):
            resource = word[: -len("/.default")]
            items.append(f"<li>Use <code>{esc(resource)}</code> as you "
                         f"(<code>{esc(word)}</code>)</li>")
        else:
            items.append(f"<li><code>{esc(word)}</code></li>")
    return items


_LISTED = 5  # people named under the field; the list to choose from has them all


def account_form(
    emu: Emulator,
    *,
    tenant_segment: str,
    client_id: str,
    scope: str,
    title: str,
    intro: str,
    action: str,
    nonce: str,
    account: Optional[str],
    yes: str,
    no: str,
    error: Optional[str] = None,
) -> Response:
    """Sign in and consent on one page: who signs in (choose one of the tenant's people, the
    first by default, or type a name), what the app asks for, and two buttons; Enter means
    ``yes``. ``title`` may name the app as ``{app}``. A page with an ``error`` is a 400."""
    ref = emu.state.resolve_tenant(tenant_segment)
    found = ref.tenant or emu.state.find_tenant(emu.tenant_id)
    assert found is not None
    app = emu.state.app(client_id)
    people = people_in(emu, found.id)
    title = title.format(app=app.display_name if app else "the app")
    app_name = app.display_name if app else client_id
    tenant = ", ".join(found.domains) or found.id
    if account is None:
        account = people[0] if people else ""
    listed = "".join(f'<option value="{esc(p)}"></option>' for p in people)
    shown = ", ".join(f"<span>{esc(p)}</span>" for p in people[:_LISTED]) + (
        f" and {len(people) - _LISTED} more" if len(people) > _LISTED else "")
    known = (f'<p class="hint" id="account-hint">People here: {shown}. '
             "Type another name to add that person.</p>\n" if people else
             '<p class="hint" id="account-hint">No people yet: type a name to add one.</p>\n')
    body = (
        f"<h1>{esc(title)}</h1>\n"
        f"<p>{esc(intro)}</p>\n"
        f"{_error(error)}"
        '<dl class="facts">\n'
        f"<dt>App</dt><dd>{esc(app_name)}<br><small>{esc(client_id)}</small></dd>\n"
        f"<dt>Organisation</dt><dd>{esc(tenant)}</dd>\n"
        f'<dt>It asks to</dt><dd><ul class="scopes">{"".join(scope_lines(scope))}</ul></dd>\n'
        "</dl>\n"
        f'<form method="post" action="{esc(action)}">\n'
        f'<input type="hidden" name="nonce" value="{esc(nonce)}">\n'
        '<label for="account">Sign in as</label>\n'
        f'<input type="text" id="account" name="username" value="{esc(account)}" '
        'list="people" autofocus required autocomplete="off" spellcheck="false" '
        'placeholder="alice@contoso.onmicrosoft.com" aria-describedby="account-hint">\n'
        f'<datalist id="people">{listed}</datalist>\n'
        f"{known}"
        '<div class="buttons">\n'
        f'<button type="submit" name="action" value="approve" class="primary">{esc(yes)}</button>\n'
        f'<button type="submit" name="action" value="decline" class="secondary" formnovalidate>'
        f"{esc(no)}</button>\n"
        "</div>\n</form>"
    )
    return page(title, body, status=400 if error else 200)


class PageNonces:
    """The nonces of the forms an emulator handed out: one use each, ten minutes at most."""

    def __init__(self, emu: Emulator) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[str, float, Any]] = OrderedDict()

    def issue(self, purpose: str, data: Any = None) -> str:
        """A new nonce for a page about ``purpose``, remembering ``data`` with it."""
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            self._open[nonce] = (purpose, time.monotonic() + NONCE_LIFETIME, data)
            while len(self._open) > MAX_NONCES:
                self._open.popitem(last=False)
        return nonce

    def take(self, nonce: str, purpose: str) -> tuple[bool, Any]:
        """``(True, data)`` for a live nonce issued for ``purpose`` (which is used up now),
        else ``(False, None)``."""
        with self._lock:
            entry = self._open.get(nonce)
            if entry is None or entry[0] != purpose:
                return False, None
            del self._open[nonce]
        if time.monotonic() >= entry[1]:
            return False, None
        return True, entry[2]

    def reset(self) -> None:
        with self._lock:
            self._open.clear()


def page_nonces(emu: Emulator) -> PageNonces:
    """The open pages of this emulator."""
    return emu.extension("page_nonces", PageNonces)


def same_origin(req: Request) -> bool:
    """Whether a form post comes from the emulator's own pages: browsers send ``Origin`` with
    a form post; when it is there it must name the host the request was sent to."""
    origin = req.headers.get("origin")
    if not origin:
        return True
    scheme, _, rest = req.url.partition("://")
    return str(origin).rstrip("/").lower() == f"{scheme}://{rest.split('/', 1)[0]}".lower()


def people_in(emu: Emulator, tenant_id: str) -> list[str]:
    """The user names of a tenant's people, in the order they were added."""
    with emu.state.lock:
        return [user.username for (tid, _), user in emu.state.users.items() if tid == tenant_id]
