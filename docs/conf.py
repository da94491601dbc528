"""Sphinx configuration for the galdeblend documentation."""

from __future__ import annotations

import galdeblend

project = "galdeblend"
author = "galdeblend developers"
copyright = "2025, galdeblend developers"
release = galdeblend.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build"]
root_doc = "index"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "furo"
html_title = f"galdeblend {release}"
