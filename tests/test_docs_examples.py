"""The documentation's examples run, and its pages agree with the code.

* The ``>>>`` examples of the user-guide pages are executed with :mod:`doctest` (tiny priors
  and sampler settings keep them to seconds), and in the slow test by Sphinx's own doctest
  builder, which runs every example of the built documentation.
* The command-line page documents every subcommand and option of the argument parser.
* The README's links to the documentation point to pages that exist.
"""

from __future__ import annotations

import argparse
import doctest
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from galdeblend.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.IGNORE_EXCEPTION_DETAIL


def run_page_examples(page: str) -> doctest.TestResults:
    """Execute the ``>>>`` examples of ``docs/<page>.rst`` in one namespace."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DataWarnings of the example files are expected
        return doctest.testfile(
            str(DOCS / f"{page}.rst"),
            module_relative=False,
            optionflags=FLAGS,
            verbose=False,
            report=True,
        )


@pytest.mark.parametrize("page, minimum", [("python_api", 40), ("learning", 10)])
def test_page_examples_run(page, minimum):
    results = run_page_examples(page)
    assert results.attempted >= minimum, f"{page}.rst: only {results.attempted} examples found"
    assert results.failed == 0, f"{page}.rst: {results.failed} example(s) failed (see the output)"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def undocumented(parsers: dict[str, argparse.ArgumentParser], text: str) -> list[str]:
    """What of ``parsers`` (subcommand -> parser) the CLI page ``text`` does not document:
    a section ``galdeblend NAME`` with the generated help and every option and positional."""
    missing = []
    for name, parser in parsers.items():
        section = re.search(
            rf"^galdeblend {name}\n-+\n(.*?)(?=^galdeblend \w+\n-+\n|\Z)", text, re.S | re.M
        )
        if section is None:
            missing.append(f"section 'galdeblend {name}'")
            continue
        body = section.group(1)
        if f".. galdeblend-help:: {name}" not in body:
            missing.append(f"the help text of {name}")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or "--quiet" in action.option_strings:
                continue  # --quiet is global, documented once at the top
            if action.option_strings:
                option = max(action.option_strings, key=len)
                if f"``{option}" not in body:
                    missing.append(f"{name} {option}")
            elif f"``{action.dest.upper()}" not in body:
                missing.append(f"{name} {action.dest.upper()}")
    return missing


def test_cli_page_documents_every_command_and_option():
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    assert "``--quiet``" in text and "``-q``" in text
    missing = undocumented(subcommands(), text)
    assert not missing, f"docs/cli.rst does not document: {missing}"


def test_cli_page_check_finds_what_is_missing():
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    parsers = subcommands()
    parsers["run"].add_argument("--not-documented-anywhere")
    parsers["nosuchcommand"] = argparse.ArgumentParser()
    assert undocumented(parsers, text) == [
        "run --not-documented-anywhere",
        "section 'galdeblend nosuchcommand'",
    ]


def test_every_page_is_in_the_toctree():
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    pages = sorted(p.stem for p in DOCS.glob("*.rst") if p.stem != "index")
    assert pages, "no documentation pages found"
    absent = [p for p in pages if not re.search(rf"^   {p}$", index, re.M)]
    assert not absent, f"pages missing from the toctree of docs/index.rst: {absent}"


def test_readme_links_to_existing_pages():
    readme = (REPO_ROOT / "README.rst").read_text(encoding="utf-8")
    blocks = re.findall(r"\.\. code-block:: bash\n\n   (.+)\n", readme)
    assert "galdeblend run --example" in blocks[0]
    assert "pytest" in blocks[1]
    links = re.findall(r"<(docs/[\w/]+\.rst)>", readme)
    assert {
        "docs/getting_started.rst",
        "docs/cli.rst",
        "docs/python_api.rst",
        "docs/output.rst",
    } <= set(links)
    missing = [link for link in links if not (REPO_ROOT / link).is_file()]
    assert not missing, f"README.rst links to missing pages: {missing}"
    assert "docs/_static/example_summary.png" in readme


@pytest.mark.slow
def test_sphinx_doctest_builder_runs_every_example(tmp_path):
    for module in ("sphinx", "numpydoc", "furo"):
        pytest.importorskip(module, reason='install the docs extra: pip install ".[docs]"')
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "doctest", "docs", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    report = (
        (tmp_path / "output.txt").read_text(encoding="utf-8")
        if (tmp_path / "output.txt").is_file()
        else ""
    )
    assert result.returncode == 0, result.stdout + result.stderr + report
    assert re.search(r"\n\s*0 failures in tests", report), report
    tested = int(re.search(r"(\d+) tests\n", report).group(1))
    assert tested >= 50, report
