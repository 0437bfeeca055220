"""The documentation site: docs/ built by MkDocs (the `docs` extra) with --strict, so that a
broken link or anchor, or a page missing from the nav, fails the build.

Without MkDocs installed the build tests are skipped, except under AUTHLAYER_REQUIRE_DOCS=1
(.ci/run installs the extra and sets it), where a missing MkDocs is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"


@pytest.fixture
def mkdocs() -> list[str]:
    """The command that runs MkDocs with this Python."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if os.environ.get("AUTHLAYER_REQUIRE_DOCS") == "1":
            pytest.fail("AUTHLAYER_REQUIRE_DOCS=1 but mkdocs or mkdocs-material is not "
                        "installed: pip install -e '.[docs]'")
        pytest.skip("the docs extra is not installed (pip install -e '.[docs]')")
    return [sys.executable, "-m", "mkdocs"]


def build(mkdocs: list[str], folder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*mkdocs, "build", "--strict", "-d", str(out)], cwd=folder,
                          capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists (lines like ``- Title: page.md``; comments skipped)."""
    return re.findall(r"^\s*- [^#\n]*?:\s*(\S+\.md)\s*$", CONFIG.read_text(encoding="utf-8"),
                      re.MULTILINE)


def test_every_page_of_docs_is_in_the_nav_and_every_nav_page_exists() -> None:
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    listed = nav_pages()
    missing = [p for p in pages if p not in listed]
    assert missing == [], f"add these pages to the nav of mkdocs.yml: {missing}"
    assert [p for p in listed if p not in pages] == []
    assert len(listed) == len(set(listed))


def test_getting_started_leads_the_site() -> None:
    assert nav_pages()[0] == "index.md"
    heading = (ROOT / "docs" / "index.md").read_text(encoding="utf-8").splitlines()[0]
    assert heading == "# Getting started in five minutes"


def test_the_site_builds_with_strict(mkdocs: list[str], tmp_path: Path) -> None:
    done = build(mkdocs, ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    for page in ("index.html", "security/index.html", "cli/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    assert "WARNING" not in done.stderr


def test_a_broken_link_or_anchor_fails_the_strict_build(mkdocs: list[str],
                                                        tmp_path: Path) -> None:
    """The strict build really checks links and anchors (mkdocs.yml's `validation`)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(CONFIG, copy / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", copy / "docs")
    security = copy / "docs" / "security.md"
    security.write_text(security.read_text(encoding="utf-8")
                        + "\nSee [nowhere](cli.md#no-such-heading) and [gone](gone.md).\n",
                        encoding="utf-8")
    done = build(mkdocs, copy, tmp_path / "site")
    assert done.returncode != 0
    assert "'gone.md'" in done.stderr
    assert "#no-such-heading" in done.stderr
