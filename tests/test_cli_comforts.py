"""The command line's comforts (issue 10), each through a real `authlayer` process against the
emulator: --verbose, what `check` says about a profile, `init`, shell completion, and progress
on long waits when standard error is a terminal."""

from __future__ import annotations

import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer.emulator import Emulator
from authlayer.emulator.device import device_codes

from .conftest import Profiles
from .signin_helpers import new_person, write_profile

GUID_SCOPE = "api://3f1b2c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d/.default"


def cli(*argv: str, env: Optional[dict[str, str]] = None, stdin: Optional[str] = None,
        ) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process, standard error a pipe (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "authlayer", *argv], capture_output=True,
                          text=True, timeout=60, check=False, input=stdin,
                          env=dict(os.environ, **(env or {})))


class Terminal:
    """A command whose standard error (and, with ``stdin=True``, standard input) is a
    terminal; standard output stays a pipe, as in ``TOKEN=$(authlayer token p)``."""

    def __init__(self, *argv: str, stdin: bool = False) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "authlayer", *argv], stdout=subprocess.PIPE,
            stderr=slave, stdin=slave if stdin else subprocess.DEVNULL,
            env=dict(os.environ, TERM="xterm"))
        os.close(slave)
        self.screen = ""

    def read_until(self, text: str, timeout: float = 30) -> str:
        """What the terminal showed, up to and including ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; the terminal showed {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready and not self._read():
                raise AssertionError(f"{text!r} never appeared before the end: {self.screen!r}")
        return self.screen

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str, str]:
        """Exit status, standard output, and everything the terminal showed."""
        out, _ = self.process.communicate(timeout=60)
        while self._read():
            pass
        os.close(self.master)
        return self.process.returncode, out.decode(), self.screen

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every writer is gone
            return False
        self.screen += chunk.decode(errors="replace")
        return bool(chunk)


# ---------------------------------------------------------------- --verbose

def test_verbose_shows_the_debug_log_on_standard_error_and_never_the_secret_or_token(
        app_profile: Any, secret: str) -> None:
    app_profile("p")
    for argv in (["--verbose", "token", "p"], ["token", "p", "-v"]):
        done = cli(*argv)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert "authlayer: DEBUG: POST 127.0.0.1" in done.stderr
        assert "new token" in done.stderr
        assert secret not in done.stderr
        assert token not in done.stderr
        assert done.stdout == token + "\n"  # the log never reaches standard output


def test_without_verbose_a_token_request_says_nothing(app_profile: Any) -> None:
    app_profile("p")
    done = cli("token", "p")
    assert done.returncode == 0
    assert done.stderr == ""


def test_the_verbose_log_redacts_anything_shaped_like_a_token_or_secret() -> None:
    """A second line of defence: authlayer logs no secret, but a plugin's message might."""
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw"
    client_secret = "WzK8Q~OnY54NvwNvZ.eW8hmzwoVRoTp2zTDp7EdT"
    script = ("import logging\nfrom authlayer.cli import _verbose\n_verbose()\n"
              "logging.getLogger('authlayer.plugin').debug('got %s with %s from %s', "
              f"{jwt!r}, {client_secret!r}, '/home/me/.config/authlayer/profiles.toml')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stderr == ("authlayer: DEBUG: got [redacted] with [redacted] from "
                           "/home/me/.config/authlayer/profiles.toml\n")


# ---------------------------------------------------------------- check

def test_check_shows_the_file_where_each_secret_comes_from_and_where_the_token_goes(
        emu: Emulator, cc_profile: str, profiles: Profiles, secret: str) -> None:
    done = cli("check", cc_profile)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"  profiles file  {profiles.path}" in lines
    assert "  client_secret  env APP_SECRET" in lines
    assert "  token goes to  127.0.0.1 (https; plain http only to loopback)" in lines
    assert "  token cache    memory (this process only)" in lines
    assert lines.index("  token cache    memory (this process only)") < lines.index(
        next(line for line in lines if line.startswith("token obtained")))
    assert secret not in done.stdout + done.stderr


def test_check_names_file_and_command_sources_and_hides_an_inline_secret(
        emu: Emulator, app: Any, secret: str, profiles: Profiles, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(secret + "\n", encoding="utf-8")
    common = (f'authority = "{emu.url}"\ntenant = "{emu.tenant_id}"\n'
              f'client_id = "{app.client_id}"\nscope = "{emu.api_scope}"\n'
              'flow = "client_credentials"\n')
    profiles.write(
        f'[profiles.from-file]\n{common}client_secret = {{ file = "secret.txt" }}\n'
        f'cache = "file"\n'
        f'[profiles.from-command]\n{common}'
        f'client_secret = {{ command = ["cat", "{tmp_path / "secret.txt"}"] }}\n'
        f'[profiles.inline]\n{common}client_secret = "{secret}"\n')
    shown = {name: cli("check", name) for name in ("from-file", "from-command", "inline")}
    assert all(done.returncode == 0 for done in shown.values()), shown
    assert f"  client_secret  file {tmp_path / 'secret.txt'}" in shown["from-file"].stdout
    assert (f"  token cache    file {tmp_path / 'cache' / 'tokens.json'}"
            in shown["from-file"].stdout)
    assert "  client_secret  command cat\n" in shown["from-command"].stdout
    assert "  client_secret  written in the profile\n" in shown["inline"].stdout
    assert all(secret not in done.stdout + done.stderr for done in shown.values())


def test_check_says_when_a_scope_names_no_host(app_profile: Any) -> None:
    app_profile("p")
    done = cli("check", "p", "--scope", GUID_SCOPE)
    assert done.returncode == 0, done.stderr
    assert "  token goes to  no host: no scope names one" in done.stdout


# ---------------------------------------------------------------- init

def _init_cc(name: str, emu: Emulator, app: Any, *extra: str,
             config: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    where = ["--config", str(config)] if config else []
    return cli("init", name, *where, "--flow", "client_credentials", "--authority", emu.url,
               "--tenant", emu.tenant_id, "--client-id", app.client_id,
               "--secret-env", "INIT_SECRET", "--scope", emu.api_scope, *extra)


def test_init_writes_a_safe_commented_profile_that_loads_and_gets_a_token(
        emu: Emulator, app: Any, secret: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "home" / "authlayer" / "profiles.toml"
    monkeypatch.setenv("AUTHLAYER_CONFIG", str(config))
    done = _init_cc("graph", emu, app)
    assert done.returncode == 0, done.stderr
    assert f"wrote profile 'graph' to {config}" in done.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.parent.parent.stat().st_mode) == 0o700
    text = config.read_text(encoding="utf-8")
    assert 'client_secret = { env = "INIT_SECRET" }  # where the secret is read from' in text
    assert "# cache = " in text  # optional keys are offered as comments
    listed = cli("profiles")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == ["graph", "client_credentials"]
    token = cli("token", "graph", env={"INIT_SECRET": secret})
    assert token.returncode == 0, token.stderr
    assert emu.count("token", client_id=app.client_id) == 1


def test_init_never_overwrites_a_profile(emu: Emulator, app: Any, tmp_path: Path) -> None:
    config = tmp_path / "profiles.toml"
    assert _init_cc("graph", emu, app, config=config).returncode == 0
    before = config.read_bytes()
    again = _init_cc("graph", emu, app, "--scope", "https://other.example.com/.default",
                     config=config)
    assert again.returncode == 2
    assert "profile 'graph' already exists: init never overwrites a profile" in again.stderr
    assert config.read_bytes() == before


def test_init_adds_to_an_existing_file_keeping_it_and_its_mode(
        emu: Emulator, app: Any, tmp_path: Path) -> None:
    config = tmp_path / "profiles.toml"
    original = '# my profiles\n[defaults]\ntimeout = 10\n\n[profiles.old]\nflow = "azure_cli"\n'
    config.write_text(original, encoding="utf-8")
    config.chmod(0o644)
    done = _init_cc("new", emu, app, config=config)
    assert done.returncode == 0, done.stderr
    text = config.read_text(encoding="utf-8")
    assert text.startswith(original + "\n# Written by `authlayer init`")
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    listed = cli("profiles", "--config", str(config))
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["old", "new"]
    assert [p.name for p in tmp_path.iterdir()] == ["profiles.toml"]  # no temporary file left


def test_init_through_a_symbolic_link_keeps_the_link(
        emu: Emulator, app: Any, tmp_path: Path) -> None:
    (tmp_path / "dotfiles").mkdir()
    real = tmp_path / "dotfiles" / "profiles.toml"
    real.write_text("", encoding="utf-8")
    real.chmod(0o600)
    link = tmp_path / "profiles.toml"
    link.symlink_to(real)
    assert _init_cc("graph", emu, app, config=link).returncode == 0
    assert link.is_symlink()
    assert "[profiles.graph]" in real.read_text(encoding="utf-8")


def test_init_refuses_a_file_that_others_may_write(
        emu: Emulator, app: Any, tmp_path: Path) -> None:
    config = tmp_path / "profiles.toml"
    config.write_text("", encoding="utf-8")
    config.chmod(0o666)
    done = _init_cc("graph", emu, app, config=config)
    assert done.returncode == 2
    assert "refusing to use the profiles file" in done.stderr
    assert config.read_text(encoding="utf-8") == ""


def test_init_names_the_option_for_what_is_missing_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "profiles.toml"
    done = cli("init", "graph", "--config", str(config), "--flow", "client_credentials",
               "--tenant", "contoso.onmicrosoft.com", "--client-id",
               "6731de76-14a6-49ae-97bc-6eba6914391e",
               "--scope", "https://graph.microsoft.com/.default")
    assert done.returncode == 2
    assert "needs a client credential" in done.stderr
    assert "(give it with --secret-env NAME, --secret-file PATH or --secret-command CMD)" \
        in done.stderr
    assert "nothing was written" in done.stderr
    assert "Traceback" not in done.stderr
    assert not config.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--flow", "client_credentail"], "unknown flow 'client_credentail'"),
    (["--flow", "device_code", "--client-id", "6731de76-14a6-49ae-97bc-6eba6914391e",
      "--scope", "https://graph.microsoft.com/.default", "--set", "timout=5"],
     "unknown key 'timout'; did you mean 'timeout'?"),
    ([], "name the flow with --flow FLOW"),
    (["--flow", "device_code", "--set", "novalue"], "--set 'novalue': write it as KEY=VALUE"),
    (["--flow", "client_credentials", "--secret-env", "A", "--secret-file", "b"],
     "give at most one of --secret-env, --secret-file and --secret-command"),
    (["--flow", "client_credentials", "--secret-command", "pass show 'graph"],
     "cannot read the command \"pass show 'graph\": No closing quotation"),
])
def test_init_answers_bad_input_with_one_clear_line(argv: list[str], message: str,
                                                    tmp_path: Path) -> None:
    done = cli("init", "p", "--config", str(tmp_path / "profiles.toml"), *argv)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_init_refuses_a_name_it_cannot_write_plainly(tmp_path: Path) -> None:
    done = cli("init", "a]b\x1b", "--config", str(tmp_path / "p.toml"), "--flow", "azure_cli")
    assert done.returncode == 2
    assert "'a]b\\x1b' is not a profile name init writes" in done.stderr


@pytest.mark.parametrize(("flow", "keys"), [
    ("device_code", ["--client-id", "9f3c2a61-4b7e-4d2a-8c1f-2e5d7a9b0c34", "--scope",
                     "https://graph.microsoft.com/User.Read", "--scope", "offline_access"]),
    ("managed_identity", ["--scope", "https://management.azure.com/.default"]),
    ("azure_cli", ["--scope", "https://management.azure.com/.default", "--cache", "memory"]),
    ("password", ["--tenant", "contoso.onmicrosoft.com", "--client-id",
                  "9f3c2a61-4b7e-4d2a-8c1f-2e5d7a9b0c34", "--scope",
                  "https://graph.microsoft.com/.default", "--set", "username=me@contoso.com",
                  "--set", 'password={ env = "MY_PASSWORD" }']),
])
def test_init_writes_profiles_of_other_flows_that_load(flow: str, keys: list[str],
                                                       tmp_path: Path) -> None:
    config = tmp_path / "profiles.toml"
    done = cli("init", "p", "--config", str(config), "--flow", flow, *keys)
    assert done.returncode == 0, done.stderr
    listed = cli("profiles", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == ["p", flow]
    assert "MY_PASSWORD" not in listed.stdout


def test_init_asks_for_what_is_missing_on_a_terminal(emu: Emulator, app: Any, secret: str,
                                                     tmp_path: Path) -> None:
    config = tmp_path / "profiles.toml"
    term = Terminal("init", "asked", "--config", str(config), "--authority", emu.url,
                    stdin=True)
    term.read_until("flow (a number or a name) [client_credentials]: ")
    term.type("1")
    term.read_until("tenant: ")
    term.type(emu.tenant_id)
    term.read_until("client_id: ")
    term.type(app.client_id)
    term.read_until("scope [https://graph.microsoft.com/.default]: ")
    term.type(emu.api_scope)
    term.read_until("or a certificate (certificate) [env]: ")
    term.type("")
    term.read_until("environment variable [CLIENT_SECRET]: ")
    term.type("ASKED_SECRET")
    code, _out, screen = term.finish()
    assert code == 0, screen
    assert "wrote profile 'asked'" in screen
    token = cli("token", "asked", "--config", str(config), env={"ASKED_SECRET": secret})
    assert token.returncode == 0, token.stderr


# ---------------------------------------------------------------- shell completion

def _bash_complete(line: str) -> list[str]:
    """What bash offers for ``line`` through the code `authlayer completion bash` prints."""
    script = ('eval "$(authlayer completion bash)"\n'
              'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$1"\n'
              '[[ "$1" == *" " ]] && COMP_WORDS+=("")\n'
              "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
              '_python_argcomplete authlayer "${COMP_WORDS[COMP_CWORD]}" '
              '"${COMP_WORDS[COMP_CWORD-1]}"\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-c", script, "complete", line], capture_output=True,
                          text=True, timeout=60, check=False, env=dict(os.environ, PATH=path))
    assert done.returncode == 0, done.stderr
    return [word.strip() for word in done.stdout.splitlines()]


def test_bash_completes_commands_and_profile_names(app_profile: Any) -> None:
    app_profile("prod-graph")
    app_profile("prod-vault")
    app_profile("dev")
    assert _bash_complete("authlayer ch") == ["check"]
    assert set(_bash_complete("authlayer ")) >= {"token", "check", "init", "completion",
                                                 "profiles", "login", "logout", "decode"}
    assert sorted(_bash_complete("authlayer token prod")) == ["prod-graph", "prod-vault"]
    assert _bash_complete("authlayer check d") == ["dev"]
    assert _bash_complete("authlayer init x --flow device") == ["device_code"]


def test_completion_of_profile_names_follows_the_config_option(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[profiles.elsewhere]\nflow = "azure_cli"\n', encoding="utf-8")
    other.chmod(0o600)
    assert _bash_complete(f"authlayer token --config {other} e") == ["elsewhere"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_code_for_each_shell(shell: str) -> None:
    done = cli("completion", shell)
    assert done.returncode == 0, done.stderr
    assert "authlayer" in done.stdout
    assert "_ARGCOMPLETE" in done.stdout  # it asks authlayer itself, through argcomplete


def _shell(name: str) -> str:
    """The shell's path; a skip where it is not installed, a failure where CI requires it
    (``AUTHLAYER_REQUIRE_SHELLS=1``, which .ci/run sets after installing both)."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("AUTHLAYER_REQUIRE_SHELLS") == "1":
            pytest.fail(f"AUTHLAYER_REQUIRE_SHELLS=1 but {name} is not installed")
        pytest.skip(f"{name} is not installed here")
    return found


def test_fish_completes_commands(tmp_path: Path) -> None:
    fish = _shell("fish")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    done = subprocess.run([fish, "--no-config", "-c",
                           "authlayer completion fish | source; complete -C 'authlayer tok'"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PATH=path, HOME=str(tmp_path)))
    assert done.stdout.split()[:1] == ["token"], done.stderr


def test_zsh_completes_commands_and_profile_names(app_profile: Any, tmp_path: Path) -> None:
    zsh = _shell("zsh")
    app_profile("prod-graph")
    # compsys needs an interactive shell: here its two helpers that the code calls are stood in
    # for, and _describe prints the completions it is given.
    script = ('autoload -U is-at-least; compdef() { :; }\n'
              'eval "$(authlayer completion zsh)"\n'
              '_describe() { print -rl -- ${(P)2} }\n'
              'words=(${(z)1}); BUFFER="$1"; CURSOR=${#BUFFER}; _python_argcomplete\n')
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    shown = {}
    for line in ("authlayer ch", "authlayer token pro"):
        done = subprocess.run([zsh, "-f", "-c", script, "zsh", line], capture_output=True,
                              text=True, timeout=60, check=False,
                              env=dict(os.environ, PATH=path, HOME=str(tmp_path)))
        assert done.returncode == 0, done.stderr
        shown[line] = [word.split(":")[0] for word in done.stdout.split("\n") if word]
    assert shown == {"authlayer ch": ["check"], "authlayer token pro": ["prod-graph"]}


def test_completion_without_argcomplete_names_the_extra() -> None:
    script = ("import sys\nsys.modules['argcomplete'] = None\n"
              "from authlayer.cli import main\nraise SystemExit(main(['completion', 'bash']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == ("authlayer: shell completion needs argcomplete: pip install "
                           "'authlayer[completion]'\n")


def test_a_cached_token_does_not_import_argcomplete(app_profile: Any) -> None:
    app_profile("f", cache="file")
    assert cli("token", "f").returncode == 0  # fills the file cache
    probe = ("import sys\nfrom authlayer.cli import main\nsys.stdout = open('/dev/null', 'w')\n"
             "code = main(['token', 'f'])\n"
             "print(code, 'argcomplete' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stderr.strip() == "0 False"


# ---------------------------------------------------------------- progress on long waits

def test_retries_show_progress_on_a_terminal_and_the_line_is_cleared(
        emu: Emulator, app_profile: Any) -> None:
    app_profile("p")
    emu.inject("status", 1, status=503, retry_after=1)
    term = Terminal("token", "p")
    code, out, screen = term.finish()
    assert code == 0, screen
    host = emu.url.split("//")[1]
    assert f"authlayer: token request to {host}: HTTP 503; retrying in 1.0 s ..." in screen
    assert screen.endswith("\r\x1b[K")  # cleared before the command ended
    assert out.startswith("eyJ")  # standard output: the token, and nothing else
    assert out.count("\n") == 1


def test_retries_show_no_progress_when_standard_error_is_not_a_terminal(
        emu: Emulator, app_profile: Any) -> None:
    app_profile("p")
    emu.inject("status", 1, status=503, retry_after=1)
    done = cli("token", "p")
    assert done.returncode == 0
    assert done.stderr == ""
    assert emu.count("token") == 2


def test_device_code_polling_shows_progress_on_a_terminal(emu: Emulator,
                                                          profiles: Profiles) -> None:
    controls = device_codes(emu)
    controls.interval = 0  # polls every second (the client's floor)
    person = new_person(emu)
    public = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=public.client_id)
    term = Terminal("login", "me")
    term.read_until("enter the code")
    term.read_until("authlayer: waiting for the sign-in (the code expires in ")
    controls.approve(username=person)
    code, out, screen = term.finish()
    assert code == 0, screen
    assert out == ""
    # The status line was cleared before the closing message was printed.
    assert "\r\x1b[Ksigned in with profile 'me'" in screen
