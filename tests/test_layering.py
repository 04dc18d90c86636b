"""Dependencies point down: the library never imports the front ends, tools or toy builders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tests_support import REPO_ROOT

PACKAGE = REPO_ROOT / "llava"
#: The library: what training, evaluation and every front end build on.
LIBRARY = [
    *sorted((PACKAGE / "model").rglob("*.py")),
    *sorted((PACKAGE / "train").rglob("*.py")),
    *sorted((PACKAGE / "eval").rglob("*.py")),
    *sorted((PACKAGE / "video").rglob("*.py")),
    *(
        PACKAGE / name
        for name in ("constants.py", "conversation.py", "dtypes.py", "mm_utils.py", "prompting.py")
    ),
]
#: Front ends, tools and toy builders: they may import the library, never the other way round.
ABOVE = (
    "llava.serve",
    "llava.quickstart",
    "llava.lmms_eval_plugin",
    "llava.tiny",
    "llava.tokenizer_train",
    "llava.visualize",
    "llava.hub",
    "llava.analysis",
    "benchmarks",
    "predict",
    "scripts",
    "tests_support",
)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_the_library_imports_nothing_above_it(path):
    above = sorted(
        name
        for name in imported_modules(path)
        if any(name == up or name.startswith(up + ".") for up in ABOVE)
    )
    assert not above, f"{path.relative_to(REPO_ROOT)} imports {above}"
