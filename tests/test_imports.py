"""Import arrows point down: library modules never import the entry points, and tasks never import each other."""

import ast
import pathlib

import pytest

from conftest import REPO_ROOT

LIBRARY = ("tasks", "models", "layers", "data", "metrics", "diffusion", "text", "clustering", "qa")
ENTRY_POINTS = {
  "storyjax.train",
  "storyjax.evaluate",
  "storyjax.sample",
  "storyjax.cluster",
  "storyjax.cli",
  "storyjax.qa.__main__",
}


def imported_modules(path: pathlib.Path) -> set[str]:
  """Absolute names of every module `path` imports (`from storyjax import train` counts as storyjax.train)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
  return names


def library_files():
  for package in LIBRARY:
    for path in sorted((REPO_ROOT / "storyjax" / package).rglob("*.py")):
      # A package's __main__.py is an entry point of its own (e.g. `python -m storyjax.data.et`).
      if path.name != "__main__.py":
        yield path


@pytest.mark.parametrize("path", list(library_files()), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_library_module_imports_no_entry_point(path):
  assert not imported_modules(path) & ENTRY_POINTS


def defines_task(path: pathlib.Path) -> bool:
  tree = ast.parse(path.read_text())
  return any(isinstance(node, ast.ClassDef) and node.name == "Task" for node in tree.body)


def test_no_task_imports_another_task():
  """A task module defines `Task`; shared helpers beside them (e.g. trajectory.py) may be imported."""
  task_modules = {
    f"storyjax.tasks.{path.stem}"
    for path in (REPO_ROOT / "storyjax" / "tasks").glob("*.py")
    if path.stem != "base" and defines_task(path)
  }
  assert {"storyjax.tasks.director", "storyjax.tasks.clatr"} <= task_modules
  for path in (REPO_ROOT / "storyjax" / "tasks").glob("*.py"):
    others = task_modules - {f"storyjax.tasks.{path.stem}"}
    assert not imported_modules(path) & others, path.name


def test_trainer_imports_no_task():
  names = imported_modules(REPO_ROOT / "storyjax" / "trainer.py")
  assert not {
    name for name in names if name.startswith("storyjax.tasks") and not name.startswith("storyjax.tasks.base")
  }
  assert not names & ENTRY_POINTS


def test_no_model_imports_another_model():
  models = {f"storyjax.models.{path.stem}" for path in (REPO_ROOT / "storyjax" / "models").glob("*.py")}
  for path in (REPO_ROOT / "storyjax" / "models").glob("*.py"):
    assert not imported_modules(path) & (models - {f"storyjax.models.{path.stem}"}), path.name
