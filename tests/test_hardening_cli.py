"""The `authlayer` command under hostile input and a hostile environment (issue 11: items 6, 10,
14 and 18): hostile token claims, a closed pipe, a full disk, the command line's own defaults,
and what a cached `authlayer token` has to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer import EntraAuth, get_token
from authlayer.cli import main
from authlayer.emulator import Emulator
from authlayer.emulator.wire import Request, Response, json_response
from authlayer.errors import ConfigError
from authlayer.jwt import b64url_encode

from .conftest import Profiles, write_cc_profile

GUID_SCOPE = "api://3f1b2c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d/.default"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def fake_jwt(claims_json: str, header: Optional[dict[str, Any]] = None) -> str:
    """A JWT-shaped string (unsigned: decode checks nothing) with the claims given as JSON
    text, so that it can hold what json.dumps would not write (NaN, deep nesting)."""
    head = json.dumps(header or {"alg": "RS256", "typ": "JWT"})
    return f"{b64url_encode(head.encode())}.{b64url_encode(claims_json.encode())}.c2ln"


def cli(*argv: str, env: Optional[dict[str, str]] = None,
        stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process (what a shell sees, exit-time flushing included)."""
    return subprocess.run([sys.executable, "-m", "authlayer", *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                          env=dict(os.environ, **(env or {})))


# ---------------------------------------------------------------- item 6: hostile claims

HOSTILE_CLAIMS = {
    "exp-1e20": '{"exp": 1e20, "aud": "x"}',
    "exp-nan": '{"exp": NaN, "iat": Infinity}',
    "iat-400-digits": '{"iat": ' + "9" * 400 + "}",
    "exp-a-string": '{"exp": "tomorrow"}',
    "exp-true": '{"exp": true}',
    "roles-not-strings": '{"roles": [1, {"a": [2]}, null, 2.5]}',
    "roles-a-string": '{"roles": "Admin"}',
    "aud-an-object": '{"aud": {"nested": ["a", "b"]}}',
    "scp-deeply-nested": '{"scp": ' + "[" * 300 + "]" * 300 + "}",
}


@pytest.mark.parametrize("claims", list(HOSTILE_CLAIMS.values()), ids=list(HOSTILE_CLAIMS))
def test_decode_shows_hostile_claims_without_a_traceback(
        claims: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "decode", fake_jwt(claims))
    assert code == 0
    assert "claims" in out
    assert "Traceback" not in err
    assert all(line.count(": ") >= 1 for line in err.splitlines())  # one line per claim


def test_decode_of_a_time_out_of_range_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "decode", fake_jwt('{"exp": 1e20}'))
    assert code == 0
    assert "expires: 1e+20 (not a valid time)" in err


@pytest.mark.parametrize("depth", [50_000, 2_000])
def test_decode_of_deeply_nested_json_is_a_one_line_error(
        depth: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "decode", fake_jwt('{"a": ' + "[" * depth + "]" * depth + "}"))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("authlayer: cannot decode the token")


def test_decode_escapes_terminal_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    claims = json.dumps({"aud": "\x1b]0;owned\x07api", "tid": "a\nforged: line",
                         "upn": "\u202eevil", "roles": ["\x9b31m", "\ud800"]})
    code, out, err = run(capsys, "decode", fake_jwt(claims))
    assert code == 0
    for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\ud800"):
        assert raw not in out + err
    assert "\\x1b]0;owned\\x07api" in err
    assert "a\\nforged: line" in err
    assert len(err.splitlines()) == 4  # audience, tenant, subject, roles: no forged line
    assert json.loads(out)["claims"]["tid"] == "a\nforged: line"  # the JSON keeps the value


def _hostile_token_server(claims: dict[str, Any]) -> Emulator:
    """An emulator whose token endpoint hands out an access token with ``claims``."""
    emu = Emulator()

    def token(_emu: Emulator, _req: Request) -> Response:
        return json_response({"token_type": "Bearer", "expires_in": 3600,
                              "access_token": fake_jwt(json.dumps(claims))})

    emu.add_route("POST", "/{tenant}/oauth2/v2.0/token", token, endpoint="token")
    return emu


def test_check_shows_a_hostile_servers_claims_escaped(
        profiles: Profiles, capsys: pytest.CaptureFixture[str]) -> None:
    claims = {"aud": "\x1b[2J\x1b[Hapi", "exp": 1e20, "roles": [7, None], "tid": "t"}
    with _hostile_token_server(claims) as emu:
        write_cc_profile(profiles, emu)
        code, out, err = run(capsys, "check", "p")
    assert code == 0, err
    assert "\x1b" not in out
    assert "\\x1b[2J\\x1b[Hapi" in out
    assert "1e+20 (not a valid time)" in out
    assert "roles     [7,null]" in out


def test_error_messages_from_a_server_are_escaped(
        profiles: Profiles, capsys: pytest.CaptureFixture[str]) -> None:
    emu = Emulator()

    def refuse(_emu: Emulator, _req: Request) -> Response:
        return json_response({"error": "invalid_client",
                              "error_description": "AADSTS7000215: bad\x1b]0;owned\x07\nline2"},
                             status=401)

    emu.add_route("POST", "/{tenant}/oauth2/v2.0/token", refuse, endpoint="token")
    with emu:
        write_cc_profile(profiles, emu)
        code, out, err = run(capsys, "token", "p")
    assert code == 1
    assert out == ""
    assert "\x1b" not in err
    assert "\x07" not in err
    assert err.count("\n") == 1


def test_profile_names_are_escaped_in_the_listing(
        profiles: Profiles, capsys: pytest.CaptureFixture[str]) -> None:
    profiles.write("""
        [profiles."evil\\u001b[31m"]
        flow = "client_credentials"
        tenant = "contoso.onmicrosoft.com"
        client_id = "11111111-2222-3333-4444-555555555555"
        client_secret = "x"
        scope = "https://graph.microsoft.com/.default"
    """)
    code, out, err = run(capsys, "profiles")
    assert "\x1b" not in out + err
    assert "evil\\x1b[31m" in out
    assert code == 0, err


# ---------------------------------------------------------------- item 10: pipes and disks

def test_a_reader_that_goes_away_ends_the_command_quietly(cc_profile: str) -> None:
    """`authlayer profiles | head -0`: the reader closes the pipe before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = cli("profiles", stdout=write)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", [["token", "app"], ["token", "app", "--json"], ["profiles"],
                                     ["check", "app"]])
def test_a_full_disk_is_one_line_and_a_failure(cc_profile: str, command: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = cli(*command, stdout=full, env={"PYTHONUNBUFFERED": ""})
    assert done.returncode == 1
    assert done.stderr == "authlayer: cannot write to standard output: No space left on device\n"


# ---------------------------------------------------------------- item 14: the command line

def test_profile_defaults_to_authlayer_profile(cc_profile: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTHLAYER_PROFILE", cc_profile)
    code, out, err = run(capsys, "token")
    assert code == 0, err
    assert out.startswith("eyJ")
    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert "profile 'app'" in out


def test_no_profile_at_all_is_a_one_line_usage_error(cc_profile: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "token")
    assert code == 2
    assert out == ""
    assert err == ("authlayer: no profile given: name one (authlayer token PROFILE) or set "
                   "$AUTHLAYER_PROFILE\n")


def test_token_for_a_scope_that_names_no_host(cc_profile: str, emu: Emulator,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI sends the token nowhere, so a scope without a host is fine there."""
    code, out, err = run(capsys, "token", cc_profile, "--scope", GUID_SCOPE)
    assert code == 0, err
    assert out.startswith("eyJ")
    assert get_token(cc_profile, scope=GUID_SCOPE).token  # nor does get_token send it anywhere


def test_entraauth_refuses_a_scope_that_names_no_host(cc_profile: str) -> None:
    auth = EntraAuth(cc_profile, scope=GUID_SCOPE)  # constructing it reads nothing yet
    with pytest.raises(ConfigError) as info:
        auth.binding  # noqa: B018 - the first request resolves the profile
    assert info.value.key == "scope"
    assert "names no host the token may be sent to: set allowed_hosts" in str(info.value)
    assert "(from the scope= argument)" in str(info.value)


def test_entraauth_refuses_a_profile_whose_scope_names_no_host(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.p]
        flow = "device_code"
        client_id = "11111111-2222-3333-4444-555555555555"
        scope = "openid offline_access"
    """)
    with pytest.raises(ConfigError) as info:
        EntraAuth("p").binding  # noqa: B018
    assert (info.value.profile, info.value.key) == ("p", "scope")


def test_bad_scope_option_is_named_as_typed(cc_profile: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "token", cc_profile, "--scope", "")
    assert code == 2
    assert "--scope" in err
    assert "scope=" not in err


def test_emulator_with_a_tenant_id_that_is_not_a_guid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "emulator", "--port", "0", "--tenant-id", "notaguid")
    assert code == 2
    assert out == ""
    assert err == ("authlayer emulator: --tenant-id must be a GUID, like "
                   "72f988bf-86f1-41af-91ab-2d7cd011db47, not 'notaguid'\n")


def test_emulator_with_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "emulator", "--port", "70000")
    assert code == 2
    assert err.count("\n") == 1
    assert "--port must be between 0 and 65535" in err


@pytest.mark.parametrize("given", ["", "   \n", "Bearer "])
def test_decode_of_nothing_says_no_token_given(given: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(given))
    code, out, err = run(capsys, "decode")
    assert code == 2
    assert out == ""
    assert err == "authlayer: no token given: pass it as an argument or on standard input\n"


def test_logout_says_when_there_was_nothing_to_forget(
        app_profile: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app_profile("f", cache="file")
    code, _out, err = run(capsys, "logout", "f")
    assert code == 0
    assert err == "nothing to forget: no cached token or sign-in of profile 'f'\n"
    run(capsys, "token", "f")
    code, _out, err = run(capsys, "logout", "f")
    assert err == "forgot the cached tokens of profile 'f'\n"
    code, _out, err = run(capsys, "logout", "f")
    assert err.startswith("nothing to forget")


def test_logout_of_a_memory_cache_profile_in_a_new_process(cc_profile: str) -> None:
    done = cli("logout", cc_profile)
    assert done.returncode == 0
    assert done.stderr.startswith("nothing to forget: profile 'app' keeps its tokens in memory")


def test_decode_does_not_advertise_config_but_accepts_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    assert "--config" not in capsys.readouterr().out
    code, out, _err = run(capsys, "decode", "--config", str(tmp_path / "nowhere.toml"),
                          fake_jwt('{"aud": "x"}'))
    assert code == 0
    assert json.loads(out)["claims"] == {"aud": "x"}


# ---------------------------------------------------------------- item 18: start-up

def _after_cached_token(app_profile: Any, report: str) -> str:
    """Run a cached `authlayer token` in a fresh process (its file cache filled first), then
    ``report``, the code that prints what it found after the exit status ``code``; return
    what it printed on standard error."""
    app_profile("f", cache="file")
    assert cli("token", "f").returncode == 0  # fills the file cache
    probe = ("import sys\nfrom authlayer.cli import main\nsys.stdout = open('/dev/null', 'w')\n"
             "code = main(['token', 'f'])\n" + report)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    return done.stderr.strip()


def test_a_cached_token_imports_no_http_client_nor_file_lock(app_profile: Any) -> None:
    """`authlayer token` served from the file cache sends nothing, so it needs none of the
    heavy imports: no HTTP (not even authlayer's own boundary), no logging until something is
    logged, no subprocess or tempfile, no argparse (a plain `token NAME` is parsed without it)
    nor shutil (the start-up time itself is measured in benchmarks/bench_startup.py)."""
    assert _after_cached_token(app_profile, (
        "heavy = ('httpx', 'httpcore', 'anyio', 'requests', 'cryptography', 'filelock',\n"
        "         'authlayer._http', 'authlayer.stores', 'socket', 'ssl', 'logging',\n"
        "         'subprocess', 'tempfile', 'random', 'difflib', 'asyncio',\n"
        "         'argparse', 'shutil', 'gettext', 'locale', 'bz2', 'lzma')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )) == "0 []"


def test_a_cached_token_defines_no_dataclass(app_profile: Any) -> None:
    """The values a cached `authlayer token` defines are records (authlayer._record), built
    without dataclasses' exec; nor does it ask for their dataclass fields, nor import
    dataclasses at all (with inspect, ast and dis, about 5 ms)."""
    assert _after_cached_token(app_profile, (
        "classes = [c for n, m in list(sys.modules.items()) if n.startswith('authlayer')\n"
        "           for c in vars(m).values() if isinstance(c, type)]\n"
        "made = sorted({f'{c.__module__}.{c.__qualname__}' for c in classes\n"
        "               if type(vars(c).get('__dataclass_fields__')) is dict})\n"
        "print(code, made, 'dataclasses' in sys.modules, file=sys.stderr)\n"
    )) == "0 [] False"


# ---------------------------------------------------------------- item 0: the demo as a smoke test

def test_demo_shows_cold_stampedes_cost_one_token_request_on_a_fresh_install() -> None:
    """`authlayer demo` is CI's smoke test of `pip install .` alone (.ci/run); here the packages
    that only the test extra brings are hidden the same way."""
    script = ("import sys\n"
              "for name in ('sniffio', 'trio', 'pytest', 'hypothesis'):\n"
              "    sys.modules[name] = None  # importing it fails, as on a fresh install\n"
              "from authlayer.cli import main\n"
              "raise SystemExit(main(['demo']))\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "cold cache, async: 50 concurrent AsyncClient requests" in done.stdout
    assert "cold cache, threads: 50 threads" in done.stdout
    assert done.stdout.count("50 requests -> 50 x 200, token requests: 1\n") == 2
    assert "demo finished successfully" in done.stdout
