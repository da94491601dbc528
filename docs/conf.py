"""Sphinx configuration for the galdeblend documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html``. The examples of the pages are
doctests: ``python -m sphinx -b doctest docs docs/_build/doctest`` runs them.
"""

from __future__ import annotations

import argparse
import doctest
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

import galdeblend

project = "galdeblend"
author = "galdeblend developers"
copyright = "2025, galdeblend developers"
release = galdeblend.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build"]
root_doc = "index"

# Members are listed per module in api.rst, so that each object is documented once.
autodoc_default_options = {"show-inheritance": True}
autodoc_member_order = "bysource"
# The optional scarlet2 baseline imports these at module level; the docs build without them.
autodoc_mock_imports = ["jax", "numpyro", "scarlet2"]
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

doctest_default_flags = (
    doctest.ELLIPSIS
    | doctest.NORMALIZE_WHITESPACE
    | doctest.IGNORE_EXCEPTION_DETAIL
    | doctest.DONT_ACCEPT_TRUE_FOR_1
)
doctest_global_setup = """
import torch
torch.set_num_threads(1)
"""

html_theme = "furo"
html_title = f"galdeblend {release}"


class CommandHelp(SphinxDirective):
    """``.. galdeblend-help:: [COMMAND]``: the ``--help`` text of ``galdeblend [COMMAND]``,
    taken from the argument parser itself so that the page never drifts from the code."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        from galdeblend.cli import build_parser

        parser = build_parser()
        if self.arguments:
            (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = commands.choices[self.arguments[0]]
        columns = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "100"  # argparse wraps to this width
        try:
            text = parser.format_help()
        finally:
            if columns is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = columns
        return [nodes.literal_block(text, text, language="text")]


def setup(app):
    app.add_directive("galdeblend-help", CommandHelp)
