"""central's layout shows its data path: every sub-package says what it owns and what it may
import, and import-linter (the contracts in pyproject.toml) holds the direction, so nothing
below imports upward and the wire protocol stays free of both sides."""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.parent for p in (ROOT / "central").glob("*/__init__.py"))


def test_every_sub_package_says_what_it_owns_and_may_import() -> None:
    assert len(PACKAGES) >= 6, PACKAGES
    for init in PACKAGES:
        doc = ast.get_docstring(ast.parse((init / "__init__.py").read_text()))
        assert doc and "May import:" in doc, f"{init.name}/__init__.py lacks its docstring"


def test_no_module_is_left_loose_in_central() -> None:
    loose = {p.name for p in (ROOT / "central").glob("*.py")}
    assert loose <= {"__init__.py", "__main__.py", "app.py"}, loose


def test_imports_point_down_the_layers() -> None:
    lint = pathlib.Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
