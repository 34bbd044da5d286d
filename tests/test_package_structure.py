"""The import graph of i2i_jax, read from the source with `ast`: no cycles.

A cycle works until someone imports the modules in another order; a lazy
import inside a function only hides one. So every import statement counts,
wherever it is. An import of a package's submodule is an edge to that
submodule, not to the package's __init__ (Python runs the parent package
first, but a package importing its own submodules is not a cycle).
"""

import ast
import graphlib
import pathlib

import pytest

import i2i_jax

PACKAGE_ROOT = pathlib.Path(i2i_jax.__file__).parent


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(tree: ast.Module, name: str, is_package: bool,
                      modules: set[str]) -> set[str]:
  """The i2i_jax modules that the statements of `tree` (module `name`) import."""
  package = name if is_package else name.rpartition(".")[0]
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # from . import x, from ..data import y
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}" if base else anchor
      for alias in node.names:
        submodule = f"{base}.{alias.name}"
        imported.add(submodule if submodule in modules else base)
  return {module for module in imported if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
  """{module: the i2i_jax modules it imports anywhere in its source}."""
  paths = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
  return {name: _imported_modules(ast.parse(path.read_text(), str(path)), name,
                                  path.name == "__init__.py", set(paths))
          for name, path in paths.items()}


def test_the_graph_sees_imports_inside_functions():
  graph = import_graph()
  # TfdsSource imports the builders (and TFDS) only when a tfds: source opens.
  assert "i2i_jax.data.tfds" in graph["i2i_jax.data.sources"]
  assert "i2i_jax.data.files" in graph["i2i_jax.data.tfds.image_folder"]


def test_no_import_cycle_among_i2i_jax_modules():
  try:
    graphlib.TopologicalSorter(import_graph()).prepare()
  except graphlib.CycleError as e:
    # graphlib lists the cycle from importer to imported backwards.
    cycle = " imports ".join(reversed(e.args[1]))
    raise AssertionError(f"import cycle: {cycle}") from None


def test_pyproject_installs_every_package_and_configs_under_i2i_jax():
  tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (CI's)
  pyproject = tomllib.loads((PACKAGE_ROOT.parent / "pyproject.toml").read_text())
  setuptools = pyproject["tool"]["setuptools"]
  packages = {_module_name(path.parent / "__init__.py")
              for path in PACKAGE_ROOT.rglob("__init__.py")}
  assert set(setuptools["packages"]) == packages | {"i2i_jax.configs"}
  assert setuptools["package-dir"] == {"i2i_jax.configs": "configs"}
  assert "configs" not in setuptools["packages"]  # no top-level `configs` in site-packages
