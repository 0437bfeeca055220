"""The pytest plugin, used the way a user's suite uses it: test files with no fixture code of
their own, run by pytest in a subprocess (``pytester``), where the plugin is loaded through its
``pytest11`` entry point like in any project that installed authlayer."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user_suite=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


@pytest.fixture
def developer_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell of a developer who uses authlayer and the Azure tools for real."""
    monkeypatch.setenv("AUTHLAYER_PROFILE", "mine")
    monkeypatch.setenv("AUTHLAYER_CONFIG", "/nonexistent/developer/profiles.toml")
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", "/nonexistent/developer/cache")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("AZURE_TENANT_ID", "developer-tenant")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "developer-secret")
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("BROWSER", "/nonexistent/firefox")


def test_importing_the_plugin_imports_no_http_client_and_no_emulator() -> None:
    code = ("import sys, authlayer.pytest_plugin\n"
            "print(sorted(m for m in sys.modules if m.startswith(('httpx', 'requests', "
            "'authlayer.emulator', 'authlayer.provider'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_a_suite_that_uses_no_fixture_of_the_plugin_pays_nothing_for_it(
        pytester: pytest.Pytester, developer_shell: None) -> None:
    result = run(pytester, """
        import os
        import sys

        def test_nothing_of_authlayer_was_imported():
            assert "authlayer.pytest_plugin" in sys.modules  # the plugin is loaded...
            loaded = [m for m in sys.modules if m.startswith(("httpx", "authlayer.emulator"))]
            assert loaded == []                                # ...and inert

        def test_the_environment_is_left_alone():
            assert os.environ["AUTHLAYER_PROFILE"] == "mine"
    """)
    result.assert_outcomes(passed=2)


def test_the_contract_example_runs_as_written(pytester: pytest.Pytester,
                                               developer_shell: None) -> None:
    result = run(pytester, """
        import requests
        from authlayer import EntraAuth


        def test_reads_things(entra_emulator, authlayer_profile):
            session = requests.Session()
            session.auth = EntraAuth(authlayer_profile())
            assert session.get(f"{entra_emulator.api_url}/things").status_code == 200
    """)
    result.assert_outcomes(passed=1)


def test_the_emulator_and_profiles_work_with_every_client(pytester: pytest.Pytester,
                                                            developer_shell: None) -> None:
    result = run(pytester, """
        import asyncio

        import httpx
        import requests
        from authlayer import EntraAuth, get_token
        from authlayer.emulator import Emulator


        def test_a_running_emulator(entra_emulator):
            assert isinstance(entra_emulator, Emulator)
            assert entra_emulator.running
            assert entra_emulator.url.startswith("http://127.0.0.1:")


        def test_requests_httpx_and_httpx_async(entra_emulator, authlayer_profile):
            auth = EntraAuth(authlayer_profile())
            url = f"{entra_emulator.api_url}/things"
            assert requests.get(url, auth=auth, timeout=10).status_code == 200
            with httpx.Client(auth=auth) as client:
                assert client.get(url).status_code == 200

            async def call():
                async with httpx.AsyncClient(auth=auth) as client:
                    return (await client.get(url)).status_code

            assert asyncio.run(call()) == 200
            assert entra_emulator.count("token", grant_type="client_credentials") == 1


        def test_roles_scope_and_other_keys(entra_emulator, authlayer_profile):
            writer = authlayer_profile("writer", roles=["Data.Read", "Data.Write"], timeout=5)
            reader = authlayer_profile("reader")
            answer = requests.get(entra_emulator.api_url, auth=EntraAuth(writer), timeout=10)
            assert answer.json()["claims"]["roles"] == ["Data.Read", "Data.Write"]
            answer = requests.get(entra_emulator.api_url, auth=EntraAuth(reader), timeout=10)
            assert answer.json()["claims"]["roles"] == ["Data.Read"]
            graph = authlayer_profile("graph", scope="https://graph.microsoft.com/.default")
            from authlayer import jwt
            claims = jwt.decode(get_token(graph).token)[1]
            assert claims["aud"] == "https://graph.microsoft.com"


        def test_the_developer_shell_does_not_leak_in(entra_emulator, authlayer_profile,
                                                     authlayer_env, tmp_path):
            import os
            for name in ("AUTHLAYER_PROFILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
                         "AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT", "BROWSER"):
                assert name not in os.environ, name
            assert os.environ["AUTHLAYER_CONFIG"] == str(authlayer_env.config)
            assert os.environ["AUTHLAYER_CACHE_DIR"] == str(authlayer_env.cache_dir)
            assert authlayer_env.config.is_relative_to(tmp_path)
            assert authlayer_env.cache_dir.is_relative_to(tmp_path)
            name = authlayer_profile("cached", cache="file")
            assert get_token(name).token
            assert list(authlayer_env.cache_dir.iterdir())  # the file cache is the test's own
    """)
    result.assert_outcomes(passed=4)


def test_authlayer_is_reset_between_tests(pytester: pytest.Pytester) -> None:
    """A token kept in memory by one test is not used by the next one, even for the very same
    profile and token endpoint."""
    result = run(pytester, """
        import pytest
        from authlayer import get_token
        from authlayer.emulator import Emulator

        shared = Emulator().start()  # one emulator for both tests, on purpose
        app = shared.register_app(secret="shared-secret")


        @pytest.fixture
        def profile(authlayer_env):
            authlayer_env.config.parent.mkdir(parents=True, exist_ok=True)
            authlayer_env.config.write_text(f'''[profiles.p]
        flow = "client_credentials"
        authority = "{shared.url}"
        tenant = "{shared.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = "shared-secret"
        scope = "{shared.api_scope}"
        cache = "memory"
        ''')
            return "p"


        @pytest.mark.parametrize("attempt", [1, 2])
        def test_each_test_asks_for_its_own_token(profile, attempt):
            before = shared.count("token")
            get_token(profile)
            assert shared.count("token") == before + 1
    """)
    result.assert_outcomes(passed=2)


def test_people_sign_in_by_themselves(pytester: pytest.Pytester, developer_shell: None) -> None:
    result = run(pytester, """
        import os
        import subprocess
        import sys

        import pytest
        import requests
        from authlayer import EntraAuth, get_token, jwt


        def who(token):
            return jwt.decode(token)[1]["preferred_username"]


        @pytest.mark.parametrize("flow", ["device_code", "authorization_code", "password",
                                          "refresh_token"])
        def test_every_flow_that_signs_a_person_in(entra_emulator, authlayer_profile,
                                                   entra_user, flow):
            name = authlayer_profile(flow=flow)
            assert who(get_token(name).token) == entra_user
            answer = requests.get(entra_emulator.api_url, auth=EntraAuth(name), timeout=10)
            assert answer.status_code == 200


        def test_the_person_is_there_without_asking(entra_emulator, authlayer_profile):
            name = authlayer_profile("me", flow="device_code")
            assert who(get_token(name).token).startswith("alice@")


        @pytest.mark.parametrize("flow", ["device_code", "authorization_code"])
        def test_authlayer_login_in_a_subprocess(entra_emulator, authlayer_profile,
                                                 entra_user, flow):
            name = authlayer_profile(flow=flow)
            login = subprocess.run([sys.executable, "-m", "authlayer", "login", name],
                                   capture_output=True, text=True, timeout=60)
            assert login.returncode == 0, login.stderr
            asked = entra_emulator.count("any")
            token = subprocess.run([sys.executable, "-m", "authlayer", "token", name],
                                   capture_output=True, text=True, timeout=60)
            assert token.returncode == 0, token.stderr
            assert who(token.stdout.strip()) == entra_user
            assert entra_emulator.count("any") == asked  # kept by login, in the test's cache
    """)
    result.assert_outcomes(passed=7)


def test_a_flow_the_factory_cannot_write_is_a_clear_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        def test_managed_identity(authlayer_profile):
            authlayer_profile("mi", flow="managed_identity")
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConfigError*authlayer_profile writes profiles of the flows "
                                 "client_credentials*not 'managed_identity'*"])
