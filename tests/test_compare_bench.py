"""benchmarks/compare.py runs end to end and prints one table of the right shape.

Only the shape is checked (columns, rows, every authlayer cell a figure): the numbers belong to
the benchmark, not to the test suite. The peers are hidden from the run, as on a machine
without the ``bench`` extra, so it runs authlayer alone and names the peers it skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "compare.py"
PEERS = ("MSAL", "azure-identity", "httpx-auth", "requests-auth", "Authlib")

# Loaded in every Python of the run (through PYTHONPATH): the peers cannot be imported, as if
# they were not installed.
HIDE_PEERS = textwrap.dedent('''
    import sys

    class _HidePeers:
        names = ("msal", "azure", "httpx_auth", "requests_auth", "authlib")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _HidePeers())
''')


def load_compare(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # it imports bench_hot_path's helpers
    spec = importlib.util.spec_from_file_location("compare_under_test", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """One `compare.py --quick` run with the peers hidden: (stdout, the page before, after)."""
    folder = tmp_path_factory.mktemp("compare")
    (folder / "sitecustomize.py").write_text(HIDE_PEERS)
    page = folder / "performance.md"
    before = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    page.write_text(before, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(folder)
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--doc", str(page)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, before, page.read_text(encoding="utf-8")


def outside(page: str, compare: ModuleType) -> str:
    """The page without its compare.py section, if it has one."""
    if compare.BEGIN not in page:
        return page
    return page[:page.index(compare.BEGIN)] + page[page.index(compare.END) + len(compare.END):]


def table_of(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in rows]


def test_quick_run_without_the_peers_names_each_one_it_skipped(
        quick_run: tuple[str, str, str]) -> None:
    out, _, _ = quick_run
    assert f"skipped (not installed): {', '.join(PEERS)}" in out


def test_quick_run_prints_one_table_with_a_figure_in_every_authlayer_cell(
        quick_run: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    out, _, _ = quick_run
    compare = load_compare(monkeypatch)
    table = table_of(out)
    assert table[0] == ["what", "authlayer"]
    assert set(table[1]) == {"---"}
    body = table[2:]
    assert len(body) == len(compare.ROWS)
    for label, cell in body:
        assert cell[:1].isdigit(), (label, cell)  # a measurement, not n/a or failed
    assert "token requests" in " ".join(label for label, _ in body)


def test_quick_run_writes_its_table_into_the_page_between_markers(
        quick_run: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    out, before, after = quick_run
    compare = load_compare(monkeypatch)
    assert after.count(compare.BEGIN) == 1
    assert after.count(compare.END) == 1
    inside = after[after.index(compare.BEGIN):after.index(compare.END)]
    assert "## Side by side" in inside
    assert table_of(inside) == table_of(out)
    assert f"Not installed, so skipped: {', '.join(PEERS)}" in inside
    assert "Python " in inside  # the machine
    assert "CPUs" in inside
    # everything outside the section is the page as it was
    assert outside(after, compare).rstrip() == outside(before, compare).rstrip()

def test_a_rerun_replaces_its_section_and_leaves_the_rest_of_the_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compare = load_compare(monkeypatch)
    page = "# Performance\n\nintro\n"
    first = compare.replace_section(page, f"{compare.BEGIN}\nrun one\n{compare.END}\n")
    second = compare.replace_section(first + "\n## Later\n\ntext\n",
                                     f"{compare.BEGIN}\nrun two\n{compare.END}\n")
    assert "run one" not in second
    assert second.count("run two") == 1
    assert second.startswith(page.rstrip("\n"))
    assert second.endswith("## Later\n\ntext\n")
