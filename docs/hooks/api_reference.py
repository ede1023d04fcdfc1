"""The API reference: one generated page per public module of the package.

An MkDocs hook (``hooks:`` in mkdocs.yml). It walks the package's source
tree, so a module added, moved or renamed is documented without editing
mkdocs.yml: each public module gets a page ``reference/<dotted.name>.md``
holding ``::: dotted.name`` (rendered by mkdocstrings from the docstrings,
read statically by griffe, never imported), and the navigation's
"API reference" section lists the pages, grouped by subpackage.

Public means: no part of the dotted name starts with ``_`` (so ``_core``,
the compiled extension, and the private helpers are left out; their
public methods appear on the classes built over them), and not the CLI
layer (``cli``, ``bench``, ``demo``), which the guide's pages document as
commands. The drop-ins (``compat``) are the peers' APIs, documented by the
peers: each gets its module docstring (what it replaces, how it differs;
docs/migrating.md has every difference), not its members, and the modules
inside a drop-in package (``compat.tenacity.wait``...) no page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PACKAGE = "virtrigaud_resilience"
SOURCE_ROOT = Path(__file__).resolve().parents[2] / "python"
CLI_LAYER = {"cli", "bench", "demo"}
DROP_INS = "compat"
SECTION = "API reference"
PAGES_DIR = "reference"


def public_modules() -> list[str]:
    """The dotted names of the public modules, sorted (the package first)."""
    names = []
    for path in (SOURCE_ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts):
            continue
        if len(parts) > 1 and parts[1] in CLI_LAYER:
            continue
        if _is_drop_in(parts) and len(parts) > 3:
            continue
        names.append(".".join(parts))
    return sorted(names, key=lambda name: (name != PACKAGE, name))


def page_path(module: str) -> str:
    return f"{PAGES_DIR}/{module}.md"


def page_text(module: str) -> str:
    # The package re-exports the public names of the modules below, each
    # documented on its module's page, and a drop-in's members are its
    # peer's API: their pages are their docstrings.
    if module == PACKAGE or _is_drop_in(module.split(".")):
        return f"# `{module}`\n\n::: {module}\n    options:\n      members: false\n"
    return f"# `{module}`\n\n::: {module}\n"


def _is_drop_in(parts: list[str]) -> bool:
    return len(parts) > 1 and parts[1] == DROP_INS


def navigation(modules: list[str]) -> list[Any]:
    """The section's entries: the package, its top-level modules, then each subpackage's."""
    top: list[Any] = []
    subpackages: dict[str, list[Any]] = {}
    for module in modules:
        parts = module.split(".")
        entry = {module: page_path(module)}
        if len(parts) <= 2 and not _is_package(parts):
            top.append(entry)
        else:
            subpackages.setdefault(parts[1], []).append(entry)
    return top + [{f"{PACKAGE}.{name}": entries} for name, entries in subpackages.items()]


def _is_package(parts: list[str]) -> bool:
    return len(parts) > 1 and (SOURCE_ROOT.joinpath(*parts) / "__init__.py").is_file()


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.nav = [*(config.nav or []), {SECTION: navigation(public_modules())}]
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for module in public_modules():
        files.append(File.generated(config, page_path(module), content=page_text(module)))
    return files
