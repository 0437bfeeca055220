"""The `authlayer` command: output streams, exit statuses, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authlayer import jwt
from authlayer.cli import main
from authlayer.emulator import Emulator

from .conftest import Profiles


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_profiles_lists_names_and_never_secrets(cc_profile: str, secret: str, emu: Emulator,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "profiles")
    assert code == 0
    assert "app" in out
    assert "client_credentials" in out
    assert emu.api_scope in out
    assert secret not in out + err


def test_token_prints_only_the_token_on_stdout(cc_profile: str, emu: Emulator,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "token", cc_profile)
    assert code == 0
    token = out.strip()
    assert out.count("\n") == 1
    assert jwt.decode(token)[1]["aud"] == emu.api_resource
    assert token not in err


def test_token_json_and_overrides(cc_profile: str, emu: Emulator,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", cc_profile, "--json",
                       "--scope", "https://graph.microsoft.com/.default")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"access_token", "expires_on", "token_type"}
    assert jwt.decode(data["access_token"])[1]["aud"] == "https://graph.microsoft.com"


def test_check_shows_claims_but_not_the_token(cc_profile: str, emu: Emulator, app: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", cc_profile)
    assert code == 0
    assert "configuration is valid" in out
    assert emu.api_resource in out
    assert app.client_id in out
    assert "Data.Read" in out
    token = emu.requests[-1]  # the token request; the token itself must not be printed
    assert token.endpoint == "token"
    assert "eyJ" not in out + err


def test_decode_reads_argument_or_stdin(cc_profile: str, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from authlayer import get_token

    token = get_token(cc_profile).token
    code, out, _ = run(capsys, "decode", token)
    assert code == 0
    assert json.loads(out)["header"]["alg"] == "RS256"
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("Bearer " + token + "\n"))
    code, out, _ = run(capsys, "decode")
    assert code == 0
    assert "claims" in json.loads(out)


def test_decode_garbage_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "decode", "not-a-jwt")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "3 dot-separated parts" in err


def test_config_error_exits_2_with_one_line(profiles: Profiles,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    profiles.write("""
        [profiles.x]
        flow = "client_credentials"
        client_id = "11111111-2222-3333-4444-555555555555"
        tenant = "contoso.onmicrosoft.com"
        client_secrt = "x"
        scope = "https://graph.microsoft.com/.default"
    """)
    code, out, err = run(capsys, "token", "x")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "client_secret" in err  # did you mean
    assert "Traceback" not in err


def test_token_error_exits_1(emu: Emulator, app: Any, profiles: Profiles,
                             capsys: pytest.CaptureFixture[str]) -> None:
    profiles.write(f"""
        [profiles.bad]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = "wrong-secret-value"
        scope = "{emu.api_scope}"
    """)
    code, out, err = run(capsys, "token", "bad")
    assert code == 1
    assert out == ""
    assert "AADSTS7000215" in err
    assert "wrong-secret-value" not in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_login_and_logout(cc_profile: str, emu: Emulator,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "login", cc_profile)
    assert code == 0
    assert out == ""
    assert "signed in" in err
    code, out, err = run(capsys, "logout", cc_profile)
    assert code == 0
    assert "forgot" in err


def test_python_dash_m_and_version(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "authlayer", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("authlayer ")


def test_demo_runs_offline() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    done = subprocess.run([sys.executable, "-m", "authlayer", "demo"], capture_output=True,
                          text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "demo finished successfully" in done.stdout
    assert "401 retry" in done.stdout
    assert "AADSTS7000215" in done.stdout
    assert "eyJ" not in done.stdout + done.stderr


def test_emulator_command_serves_until_stopped() -> None:
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "authlayer", "emulator", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("authlayer emulator listening on http://127.0.0.1:")
        url = first.split()[-1]
        import httpx

        assert httpx.get(f"{url}/common/v2.0/.well-known/openid-configuration").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_no_prompt_fails_instead_of_asking_a_person(emu: Emulator, profiles: Profiles,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    public = emu.register_app(public=True)
    profiles.write(f"""
        [profiles.me]
        flow = "device_code"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{public.client_id}"
        scope = "{emu.api_scope}"
    """)
    code, out, err = run(capsys, "token", "me", "--no-prompt")
    assert code == 1
    assert out == ""
    assert "authlayer login me" in err
    assert emu.count("devicecode") == 0


def test_profiles_lists_every_profile_even_when_one_is_broken(
    cc_profile: str, profiles: Profiles, capsys: pytest.CaptureFixture[str]
) -> None:
    text = profiles.path.read_text() + (
        '\n[profiles.broken]\nflow = "client_credentials"\nclient_id = "x"\n'
        'tenant = "contoso.onmicrosoft.com"\ncertificate = "missing.pem"\n'
        'scope = "https://graph.microsoft.com/.default"\n')
    profiles.write(text)
    code, out, err = run(capsys, "profiles")
    assert code == 2
    assert "app" in out
    assert "client_credentials" in out
    assert "broken" in out
    assert "invalid" in out
    assert "missing.pem" in err
    assert err.count("\n") == 1


# ------------------------------------------------------------ `authlayer token` without argparse

# Words a command line may hold after `token`: names, the options spelt in full and otherwise,
# values that look like options, and what argparse treats specially.
_WORDS = ["bench", "other", "", "a b", "--json", "--no-prompt", "-v", "--verbose", "--config",
          "--scope", "--tenant", "/p.toml", "api://x/.default", "-x", "-1", "--", "--js",
          "--scope=s", "-h", "--help", "--version", "token", "--no-prompt=1"]


def _parsed(argv: list[str], command: Any) -> Any:
    """What the parser makes of ``argv`` (the parser built for ``command``): its namespace as
    a dict, or ``None`` where it refuses (it exits)."""
    from authlayer.cli import _parser

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()):
            return vars(_parser(command).parse_args(argv))
    except SystemExit:
        return None


@settings(max_examples=400, deadline=None)
@given(words=st.lists(st.sampled_from(_WORDS), max_size=5))
def test_token_is_parsed_as_the_parser_parses_it(words: list[str]) -> None:
    """A plain `authlayer token` is parsed without argparse; what it accepts, it reads as the
    parser would (the full parser, and the one built for `token` alone); the rest goes to
    the parser."""
    from authlayer.cli import _plain_token

    argv = ["token", *words]
    quick = _plain_token(argv)
    if quick is not None:
        assert vars(quick) == _parsed(argv, None) == _parsed(argv, "token")


@pytest.mark.parametrize("argv", [
    ["token", "bench"], ["token"], ["token", "--json", "bench", "--no-prompt"],
    ["token", "--scope", "api://x/.default", "--tenant", "t", "--config", "/p.toml", "-v", "b"],
])
def test_plain_token_command_lines_take_the_quick_way(argv: list[str]) -> None:
    from authlayer.cli import _plain_token

    quick = _plain_token(argv)
    assert quick is not None
    assert vars(quick) == _parsed(argv, None)


@pytest.mark.parametrize("argv", [
    ["token", "a", "b"], ["token", "--js", "a"], ["token", "--scope"], ["token", "--scope", "-x"],
    ["token", "--", "a"], ["token", "-h"], ["token", "--scope=s", "a"], ["check", "a"], [],
])
def test_other_command_lines_go_to_the_parser(argv: list[str]) -> None:
    from authlayer.cli import _plain_token

    assert _plain_token(argv) is None
