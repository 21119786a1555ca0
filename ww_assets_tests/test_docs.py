"""The tests that README and docs/ name as evidence exist: a renamed or deleted test fails here,
not silently in the docs."""

from __future__ import annotations

import ast
import re

from ww_assets_tests.conftest import REPO

REFERENCE = re.compile(r"\b(test_\w+\.py)::(\w+)")


def _defined(test_file: str) -> set[str]:
    tree = ast.parse((REPO / "ww_assets_tests" / test_file).read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def test_every_test_the_docs_name_exists() -> None:
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    named = {(doc.name, file, name) for doc in documents
             for file, name in REFERENCE.findall(doc.read_text())}
    assert len(named) > 50, "the docs name the tests that show their claims"
    missing = sorted(f"{doc}: {file}::{name}" for doc, file, name in named
                     if not (REPO / "ww_assets_tests" / file).exists() or name not in _defined(file))
    assert not missing, "\n".join(missing)
