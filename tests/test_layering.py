"""The house's import direction: ardrag is the library; flows (Prefect), annotation (Label Studio) and
studio (the web server) build on it, never the reverse."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_LIBRARY = (
    "prefect",
    "prefect_dask",
    "label_studio_sdk",
    "flows",
    "annotation",
    "studio",
    "fastapi",
    "uvicorn",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_prefect_or_label_studio():
    offenders = {}
    files = sorted((ROOT / "ardrag").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        bad = _imports(path) & set(FORBIDDEN_IN_LIBRARY)
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def _modules(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_models_are_built_without_the_data_sources():
    """ardrag.model builds every model (tiny ones included); the data sources build on it, not the reverse."""
    files = sorted((ROOT / "ardrag" / "model").rglob("*.py"))
    assert len(files) > 3
    offenders = {p.name: sorted(m for m in _modules(p) if m.startswith("ardrag.data.sources")) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_the_models_loads_no_data_source():
    code = (
        "import importlib, pkgutil, sys, ardrag.model\n"
        "for m in pkgutil.walk_packages(ardrag.model.__path__, 'ardrag.model.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('ardrag.data.sources')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_annotation_never_imports_flows():
    for path in sorted((ROOT / "annotation").rglob("*.py")):
        assert "flows" not in _imports(path), path


def test_importing_every_library_module_loads_neither():
    code = (
        "import importlib, pkgutil, sys, ardrag\n"
        "for m in pkgutil.walk_packages(ardrag.__path__, 'ardrag.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_LIBRARY!r}]\n"
        "print(sorted(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_python_package_named_datasets():
    assert not (ROOT / "datasets" / "__init__.py").exists()
    assert not list((ROOT / "datasets").rglob("*.py"))
