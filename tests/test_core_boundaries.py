"""The core knows components only through the registry: it never imports a built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "nlpfw"


def test_core_never_imports_builtin_plugins():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):  # nlpfw/serve/ too
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("nlpfw_plugins", "plugins")]
    assert offenders == []
    assert len(list(CORE.glob("*.py"))) >= 10  # the walk saw the core
