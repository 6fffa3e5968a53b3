"""MkDocs hook: the site's home page is the repository's README.md (one copy to keep), its
`docs/x.md` links rewritten to the site's `x.md` and the `docs/` folder link to the home page."""

from __future__ import annotations

import os
import re

from mkdocs.structure.files import File, Files


def _readme_for_the_site(readme: str) -> str:
    """README text with links into docs/ made relative to docs/ itself."""
    text = re.sub(r"\]\(docs/\)", "](index.md)", readme)
    return re.sub(r"\]\(docs/([^)]+)\)", r"](\1)", text)


def on_files(files: Files, config) -> Files:
    readme = os.path.join(os.path.dirname(config["config_file_path"]), "README.md")
    with open(readme, encoding="utf-8") as handle:
        content = _readme_for_the_site(handle.read())
    files.append(File.generated(config, "index.md", content=content))
    return files
