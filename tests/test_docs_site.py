"""The documentation site (mkdocs.yml, Material theme) builds with --strict: every page in the nav,
no page left out of it, no link to a missing page or anchor (issue 26)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_docs_site_builds_strictly_with_the_readme_as_its_home_page(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Can I trust these attributions?" in home and 'href="usage/"' in home, home[:2000]
    pages = sorted(p.name for p in site.iterdir() if (p / "index.html").exists())
    documented = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, "docs")) if name.endswith(".md"))
    assert pages == documented, (pages, documented)


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The check above can fail: the same build over a copy of the docs with one link to a page
    that does not exist is refused."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "docs"), copy / "docs")
    shutil.copy(os.path.join(REPO, "mkdocs.yml"), copy / "mkdocs.yml")
    shutil.copy(os.path.join(REPO, "README.md"), copy / "README.md")
    with open(copy / "docs" / "faults.md", "a", encoding="utf-8") as handle:
        handle.write("\nSee [the missing page](no-such-page.md).\n")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=copy, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "no-such-page.md" in done.stderr, done.stderr[-4000:]
