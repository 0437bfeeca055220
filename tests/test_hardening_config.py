"""Hardening of profiles and secrets (issue 11): a profiles file other users could change is
refused; secret sources are bounded (no FIFO hang, no endless file or command); secrets stay
out of tracebacks with captured locals; two password profiles never share a sign-in; control
characters and endless `extends` chains are refused; inline secrets enter cache keys through a
keyed hash with a per-installation salt."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from authlayer import ConfigError, TokenError, config, get_token
from authlayer.config import MAX_EXTENDS_DEPTH, load_profile
from authlayer.emulator import Emulator
from authlayer.emulator.users import mint_refresh_token, revoke_refresh_tokens
from authlayer.flows import password as password_flow
from authlayer.flows.password import PasswordFlowWarning
from authlayer.profile import MAX_SECRET_BYTES, SALT_FILE, Secret, SecretSource
from authlayer.provider import PROVIDER

from .conftest import Profiles
from .signin_helpers import new_person, write_profile

OTHER_UID = 54321  # no one: a user other than the one running the tests
needs_root = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="POSIX, as root (to give files away)"
)
posix_only = pytest.mark.skipif(os.name != "posix", reason="owner and mode are POSIX's")

CID = "6731de76-14a6-49ae-97bc-6eba6914391e"
PROFILE = f"""\
[profiles.p]
flow = "client_credentials"
client_id = "{CID}"
tenant = "contoso.onmicrosoft.com"
scope = "https://graph.microsoft.com/.default"
client_secret = {{ env = "SOME_SECRET" }}
"""


@pytest.fixture(autouse=True)
def _fresh_config() -> Iterator[None]:
    config.clear_cache()
    yield
    config.clear_cache()


def profiles_file(folder: Path, text: str = PROFILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_profile("p", config=path)
    return caught.value


# ------------------------------------------------------------------ item 4: who may change it


@posix_only
@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_a_profiles_file_others_may_write_is_refused_with_the_fix(tmp_path: Path,
                                                                  mode: int) -> None:
    path = profiles_file(tmp_path / "conf")
    path.chmod(mode)
    error = refused(path)
    assert error.path == str(path)
    assert f"writable by others (mode {mode:04o})" in str(error)
    assert f"chmod go-w {path}" in str(error)


@posix_only
def test_a_profiles_file_only_others_may_read_is_fine(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf")
    path.chmod(0o644)
    assert load_profile("p", config=path).name == "p"


@needs_root
def test_a_profiles_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf")
    os.chown(path, OTHER_UID, -1)
    error = refused(path)
    assert f"owned by another user (uid {OTHER_UID})" in str(error)
    assert "chown" in str(error)


@posix_only
def test_a_profiles_file_of_root_is_fine_for_another_user(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = profiles_file(tmp_path / "conf")
    os.chown(path.parent, os.geteuid(), -1)
    if os.geteuid() == 0:
        # root's own files, seen by a user who is not root (as /etc/... would be)
        monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)
        os.chown(path.parent, OTHER_UID, -1)
    assert load_profile("p", config=path).name == "p"


@posix_only
def test_a_profiles_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf")
    path.parent.chmod(0o777)
    error = refused(path)
    assert f"its folder {path.parent} is writable by others (mode 0777)" in str(error)
    assert f"chmod go-w {path.parent}" in str(error)


@needs_root
def test_a_profiles_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf")
    os.chown(path.parent, OTHER_UID, -1)
    assert f"owned by another user (uid {OTHER_UID})" in str(refused(path))


@posix_only
def test_a_shared_sticky_folder_like_tmp_is_fine(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "shared")
    path.parent.chmod(0o1777)
    assert load_profile("p", config=path).name == "p"


@posix_only
def test_the_real_folder_behind_a_symbolic_link_is_checked(tmp_path: Path) -> None:
    real = profiles_file(tmp_path / "open")
    real.parent.chmod(0o777)
    link = tmp_path / "conf" / "profiles.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    assert "its folder" in str(refused(link))


@posix_only
def test_the_check_applies_to_the_environment_and_the_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = profiles_file(tmp_path / "env")
    from_env.chmod(0o666)
    monkeypatch.setenv("AUTHLAYER_CONFIG", str(from_env))
    with pytest.raises(ConfigError, match="writable by others"):
        get_token("p")
    monkeypatch.delenv("AUTHLAYER_CONFIG")
    default = profiles_file(tmp_path / "xdg" / "authlayer")  # $XDG_CONFIG_HOME is tmp/xdg
    default.parent.chmod(0o775)
    with pytest.raises(ConfigError, match=r"its folder .* writable by others"):
        get_token("p")


@posix_only
def test_a_file_made_writable_after_its_first_load_is_refused_next_time(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf")
    assert load_profile("p", config=path).name == "p"
    path.chmod(0o666)  # leaves the modification time as it was
    assert "writable by others" in str(refused(path))


def _feed_fifo(path: Path, text: str) -> Callable[[], None]:
    """A writer for the FIFO ``path`` (so that a blocking reader gets ``text`` instead of
    hanging); returns what releases and joins it."""

    def write() -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()

    def release() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets a still-waiting writer go
        writer.join()
        os.close(fd)

    return release


@posix_only
def test_a_fifo_as_profiles_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "profiles.toml"
    os.mkfifo(path, 0o600)
    release = _feed_fifo(path, PROFILE)
    try:
        assert "not a regular file" in str(refused(path))
    finally:
        release()


# ------------------------------------------------------------------ item 5: bounded secrets


def secret_source(tmp_path: Path, source: str) -> SecretSource:
    path = profiles_file(tmp_path / "conf", PROFILE.replace('{ env = "SOME_SECRET" }', source))
    found = load_profile("p", config=path).client_secret
    assert found is not None
    return found


def read_error(source: SecretSource) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        source.read()
    assert (caught.value.profile, caught.value.key) == ("p", "client_secret")
    return caught.value


@posix_only
def test_a_secret_file_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "secret.pipe"
    os.mkfifo(fifo, 0o600)
    source = secret_source(tmp_path, json.dumps({"file": str(fifo)}).replace(":", " ="))
    release = _feed_fifo(fifo, "from-the-pipe")
    try:
        assert "not a regular file" in str(read_error(source))
    finally:
        release()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_secret_file_that_is_a_device_is_refused(tmp_path: Path) -> None:
    source = secret_source(tmp_path, '{ file = "/dev/zero" }')
    assert "not a regular file" in str(read_error(source))


def test_a_huge_secret_file_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as file:
        file.truncate(80 * 1024 * 1024)  # sparse: takes no disk
    source = secret_source(tmp_path, f'{{ file = "{huge}" }}')
    assert "larger than 64 KB" in str(read_error(source))


def test_a_secret_file_of_64_kb_is_read_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("k" * MAX_SECRET_BYTES)
    source = secret_source(tmp_path, f'{{ file = "{path}" }}')
    assert source.read() == "k" * MAX_SECRET_BYTES
    path.write_text("k" * (MAX_SECRET_BYTES + 1))
    assert "larger than 64 KB" in str(read_error(source))


def test_a_command_printing_too_much_is_stopped_without_waiting_for_it(tmp_path: Path) -> None:
    # 128 KB, then it would sleep for ten minutes: the source must neither keep everything a
    # command prints nor wait for it to end.
    script = ("import sys, time; sys.stdout.buffer.write(b'x' * 131072); sys.stdout.flush(); "
              "time.sleep(600)")
    argv = [sys.executable, "-c", script]
    source = secret_source(tmp_path, f"{{ command = {json.dumps(argv)} }}")
    error = read_error(source)
    assert "the output of command" in str(error)
    assert "larger than 64 KB" in str(error)


def test_a_command_printing_64_kb_is_read(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", f"import sys; sys.stdout.write('c' * {MAX_SECRET_BYTES})"]
    source = secret_source(tmp_path, f"{{ command = {json.dumps(argv)} }}")
    assert source.read() == "c" * MAX_SECRET_BYTES


# ------------------------------------------------------------------ item 7: captured locals


def test_a_secret_hides_in_repr_and_str_and_refuses_pickling() -> None:
    secret = Secret("hunter2-is-the-password")
    assert secret.reveal() == "hunter2-is-the-password"
    for shown in (repr(secret), str(secret), f"{secret}", repr({"password": secret})):
        assert "hunter2" not in shown
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def with_locals(error: BaseException) -> str:
    """The traceback as Sentry or ``pytest --showlocals`` would show it, with every frame's
    locals — of the error and of every error it was raised from or during, shown or not."""
    shown: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        summary = traceback.TracebackException(
            type(seen), seen, seen.__traceback__, capture_locals=True)
        # not the test's own frame: it holds the secrets it set up
        summary.stack = traceback.StackSummary.from_list(
            [frame for frame in summary.stack if frame.filename != __file__])
        shown += summary.format(chain=False)
        seen = seen.__cause__ or seen.__context__
    return "".join(shown)


@pytest.fixture(autouse=True)
def _warn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(password_flow, "_warned", False)


def test_a_failed_password_sign_in_keeps_the_password_out_of_captured_locals(
    emu: Emulator, profiles: Profiles, public_app: Any
) -> None:
    person = new_person(emu, "Right-Password-123")
    write_profile(profiles, emu, "pw", "password", client_id=public_app.client_id,
                  username=person, password="Wrong-Password-456")
    with pytest.warns(PasswordFlowWarning), pytest.raises(TokenError) as info:
        get_token("pw")
    shown = with_locals(info.value)
    assert "form = " in shown  # the locals were captured
    assert "Wrong-Password-456" not in shown


def test_a_refused_refresh_token_stays_out_of_captured_locals(
    emu: Emulator, profiles: Profiles, public_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = new_person(emu)
    rt = mint_refresh_token(emu, client_id=public_app.client_id, username=person)
    monkeypatch.setenv("MY_RT", rt)
    write_profile(profiles, emu, "rt", "refresh_token", client_id=public_app.client_id,
                  refresh_token='{ env = "MY_RT" }')
    get_token("rt")  # the cache now holds the rotated one as well
    revoke_refresh_tokens(emu, username=person)
    with pytest.raises(TokenError) as info:
        get_token("rt", force_refresh=True)
    shown = with_locals(info.value)
    assert "form = " in shown
    sent = {r.form["refresh_token"] for r in emu.requests if "refresh_token" in r.form}
    assert rt in sent
    assert len(sent) == 2
    assert [token for token in sent if token in shown] == []


def test_a_client_secret_stays_out_of_captured_locals(
    emu: Emulator, profiles: Profiles
) -> None:
    app = emu.register_app(secret="the-right-client-secret-value")
    write_profile(profiles, emu, "cc", "client_credentials", client_id=app.client_id,
                  client_secret="a-wrong-client-secret-value")
    with pytest.raises(TokenError) as info:
        get_token("cc")
    shown = with_locals(info.value)
    assert "form = " in shown
    assert "a-wrong-client-secret-value" not in shown


@pytest.mark.parametrize("kind", ["pem", "pkcs12"])
def test_a_wrong_certificate_password_stays_out_of_captured_locals(tmp_path: Path,
                                                                   kind: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    from authlayer.certificate import load_certificate
    from authlayer.profile import CertificateConfig

    from .test_certificate import make_cert

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_cert(key)
    protect = serialization.BestAvailableEncryption(b"the-right-pfx-password")
    path = tmp_path / f"cred.{kind}"
    if kind == "pem":
        pem = serialization.Encoding.PEM
        path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, protect)
                         + cert.public_bytes(pem))
    else:
        path.write_bytes(pkcs12.serialize_key_and_certificates(b"c", key, cert, None, protect))
    wrong = SecretSource("value", "a-wrong-pfx-password", key="certificate.password",
                         profile="p")
    with pytest.raises(ConfigError, match="wrong password") as info:
        load_certificate(CertificateConfig(str(path), wrong), profile="p", config_path=None)
    shown = with_locals(info.value)
    assert "password = " in shown
    assert "a-wrong-pfx-password" not in shown


@pytest.mark.parametrize("broken", ["no certificate", "not RSA"])
def test_an_unusable_certificate_file_keeps_its_private_key_out_of_captured_locals(
        tmp_path: Path, broken: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from authlayer.certificate import load_certificate
    from authlayer.profile import CertificateConfig

    from .test_certificate import make_cert

    if broken == "no certificate":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        extra = b""
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        extra = make_cert(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                          ).public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = tmp_path / "cred.pem"
    path.write_bytes(pem + extra)
    with pytest.raises(ConfigError, match=broken.split()[-1]) as info:
        load_certificate(CertificateConfig(str(path)), profile="p", config_path=None)
    shown = with_locals(info.value)
    assert "where = " in shown  # the locals were captured
    body = b"".join(pem.splitlines()[1:-1]).decode()
    assert [line for line in body.split() if line[:40] in shown] == []
    assert body[:40] not in shown


# ------------------------------------------------------------------ item 8: two passwords


@pytest.mark.parametrize("how", ["inline", "env"])
def test_a_password_profile_with_the_wrong_password_gets_no_token_of_the_right_one(
    emu: Emulator, profiles: Profiles, public_app: Any, monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    person = new_person(emu, "Right-Password-123")
    monkeypatch.setenv("GOOD_PW", "Right-Password-123")
    monkeypatch.setenv("BAD_PW", "Wrong-Password-456")
    good = "Right-Password-123" if how == "inline" else '{ env = "GOOD_PW" }'
    bad = "Wrong-Password-456" if how == "inline" else '{ env = "BAD_PW" }'
    common = dict(client_id=public_app.client_id, username=person, cache="file")
    text = ""
    for name, password in (("good", good), ("bad", bad)):
        write_profile(profiles, emu, name, "password", password=password, **common)
        text += profiles.path.read_text()
    profiles.write(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PasswordFlowWarning)
        assert get_token("good").token
        with pytest.raises(TokenError) as info:
            get_token("bad")
        assert info.value.error_codes == (50126,)
        PROVIDER.reset()  # a new process: only the token cache file is left
        with pytest.raises(TokenError):
            get_token("bad")
        assert get_token("good").token
    assert emu.count("token", grant_type="password") == 3  # good once, bad twice


# ------------------------------------------------------------------ item 9: smaller ones


@pytest.mark.parametrize(("key", "value"), [
    ("authority", "https://login.microsoftonline.com\u0000.evil.example"),
    ("authority", "https://login.microsoftonline.com\u001b[2J"),
    ("client_id", f"{CID}\u0000"),
    ("username", "ann\u0007@contoso.com"),
    ("scope", "https://graph.microsoft.com/.default\u0000"),
])
def test_control_characters_are_refused(tmp_path: Path, key: str, value: str) -> None:
    keys = {"flow": "password", "client_id": CID, "tenant": "contoso.onmicrosoft.com",
            "scope": "https://graph.microsoft.com/.default", "username": "ann@contoso.com",
            "password": "a-password", key: value}
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    error = refused(profiles_file(tmp_path / "conf", f"[profiles.p]\n{body}"))
    assert error.key == key
    assert "control character" in str(error)
    assert "\u0000" not in str(error)


def test_a_command_argument_with_a_nul_is_refused(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf", PROFILE.replace(
        '{ env = "SOME_SECRET" }', '{ command = ["printf", "a\\u0000b"] }'))
    assert "NUL" in str(refused(path))


def _extends_chain(links: int) -> str:
    text = PROFILE.replace("[profiles.p]", "[profiles.base]")
    names = ["p", *(f"level{n}" for n in range(1, links)), "base"]
    for name, parent in zip(names, names[1:]):
        text += f'[profiles.{name}]\nextends = "{parent}"\n'
    return text


def test_an_extends_chain_as_deep_as_allowed_works(tmp_path: Path) -> None:
    path = profiles_file(tmp_path / "conf", _extends_chain(MAX_EXTENDS_DEPTH))
    assert load_profile("p", config=path).client_id == CID


def test_an_extends_chain_deeper_than_allowed_is_refused(tmp_path: Path) -> None:
    for links in (MAX_EXTENDS_DEPTH + 1, 20_000):
        config.clear_cache()
        path = profiles_file(tmp_path / "conf", _extends_chain(links))
        error = refused(path)
        assert (error.profile, error.key) == ("p", "extends")
        assert f"more than {MAX_EXTENDS_DEPTH} profiles deep" in str(error)


def _identity_elsewhere(cache_dir: Path, secret: str) -> subprocess.Popen[str]:
    code = ("import sys; from authlayer.profile import SecretSource; "
            "print(SecretSource('value', sys.argv[1]).identity)")
    env = {**os.environ, "AUTHLAYER_CACHE_DIR": str(cache_dir)}
    return subprocess.Popen([sys.executable, "-c", code, secret], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_an_inline_secret_enters_cache_keys_through_this_installations_keyed_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    secret = "inline-secret-value"
    here = SecretSource("value", secret).identity
    assert hashlib.sha256(secret.encode()).hexdigest()[:16] not in here
    assert secret not in here
    salt = tmp_path / "cache" / SALT_FILE
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600
    # Processes of this installation agree, even when they all create the salt at once ...
    cache = tmp_path / "cache-2"
    racing = [_identity_elsewhere(cache, secret) for _ in range(4)]
    seen = {p.communicate()[0].strip() for p in racing}
    assert len(seen) == 1
    assert _identity_elsewhere(cache, secret).communicate()[0].strip() in seen
    # ... and another installation (another salt) says something else.
    assert here not in seen


def test_without_a_place_for_the_salt_keys_still_work_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", str(blocker / "cache"))
    first = SecretSource("value", "inline-secret-value").identity
    assert SecretSource("value", "inline-secret-value").identity == first
    assert SecretSource("value", "another-secret-value").identity != first
    assert "for this process only" in caplog.text
