"""dvc.yaml's code deps cannot drift from the code: each stage lists every project file it imports.

The import closure of stages/<name>.py is computed statically with `ast`: `import a.b`, `from a.b import c`
(c a name or a submodule), relative imports and imports inside functions all count, and importing a.b.c
executes a/__init__.py and a/b/__init__.py too. Only project files (captioning/..., stages/...) are followed.
A dep that is a folder covers every file under it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("captioning", "stages")
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def module_file(module: str, root: Path = REPO) -> Path | None:
    """The project file of a dotted module name (a .py file or a package's __init__.py), None if not ours."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def with_parents(module: str) -> list[str]:
    """a.b.c -> a, a.b, a.b.c: importing a module executes the __init__.py of every package above it."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Every module name an `import` anywhere in `path` may load (including submodules named in `from`)."""
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            modules.update(with_parents(base))
            modules.update(f"{base}.{alias.name}" for alias in node.names)  # kept below only if a submodule
    return modules


def import_closure(start: Path, root: Path = REPO) -> set[Path]:
    """The project files Python executes for `python -m <start>`: its packages' __init__.py, then its imports."""
    seen, todo = set(), [module_file(m, root) for m in with_parents(module_name(start, root))]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path, root):
            found = module_file(module, root)
            if found is not None:
                todo.append(found)
    return seen


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def stage_file(name: str) -> Path:
    return REPO / "stages" / f"{name}.py"


def code_stages() -> list[str]:
    return [name for name in STAGES if stage_file(name).is_file()]


def test_every_stage_has_its_script():
    assert code_stages() == list(STAGES)
    for name, stage in STAGES.items():
        assert f"python -m stages.{name} " in stage["cmd"] + " ", name
        assert f"stages/{name}.py" in stage["deps"], name


@pytest.mark.parametrize("name", code_stages())
def test_stage_deps_cover_its_import_closure(name: str):
    deps = STAGES[name]["deps"]
    closure = import_closure(stage_file(name))
    missing = sorted(str(path.relative_to(REPO)) for path in closure if not covered(path, deps))
    assert not missing, f"dvc.yaml: stage {name} imports files that are not among its deps: {', '.join(missing)}"


@pytest.mark.parametrize("name", code_stages())
def test_every_code_dep_is_imported(name: str):
    """No stale or needless code dep: each one exists and holds a file of the stage's import closure."""
    closure = import_closure(stage_file(name))
    code = [dep for dep in STAGES[name]["deps"] if dep.split("/")[0] in PACKAGES]
    unused = [dep for dep in code if not any(covered(path, [dep]) for path in closure)]
    assert not unused, f"dvc.yaml: stage {name} lists deps it does not import: {', '.join(unused)}"


@pytest.mark.parametrize("name", code_stages())
def test_no_stage_imports_another_stage(name: str):
    others = {stage_file(other) for other in code_stages() if other != name}
    imported = sorted(str(path.relative_to(REPO)) for path in import_closure(stage_file(name)) & others)
    assert not imported, f"stages/{name}.py imports another stage: {', '.join(imported)} (share code via captioning/)"


@pytest.mark.parametrize("name", ["train", "finetune"])
def test_training_deps_leave_out_what_only_evaluate_runs(name: str):
    """Narrow deps: editing the gallery, the figures, grounding, the intervals or the dataset readers does not
    retrain (tests/test_pipeline.py checks the same through dvc status)."""
    deps = STAGES[name]["deps"]
    only_evaluate = ["captioning/reports", "captioning/scoring/grounding.py", "captioning/scoring/significance.py"]
    for path in [*only_evaluate, "captioning/data/scenes.py", "captioning/data/readers/common.py"]:
        assert not covered(REPO / path, deps), path
    assert "captioning" not in deps and "captioning/" not in deps


def write_module(root: Path, name: str, source: str) -> Path:
    path = root.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


def test_closure_follows_every_form_of_import(tmp_path: Path):
    """The checker itself, on a miniature project: each form of import is followed, and only project files."""
    write_module(tmp_path, "captioning.__init__", "")
    write_module(tmp_path, "captioning.pkg.__init__", "from .inner import VALUE\n")
    write_module(tmp_path, "captioning.pkg.inner", "VALUE = 1\n")
    write_module(tmp_path, "captioning.pkg.sub", "import json\n")
    write_module(tmp_path, "captioning.plain", "def f():\n    from captioning import lazy\n")
    write_module(tmp_path, "captioning.lazy", "")
    write_module(tmp_path, "captioning.relative", "from . import plain\nfrom .pkg.sub import x\n")
    write_module(tmp_path, "captioning.untouched", "")
    write_module(tmp_path, "stages.__init__", "")
    start = write_module(
        tmp_path, "stages.one", "import numpy\nfrom captioning.pkg import sub\nimport captioning.relative\n"
    )
    names = {str(path.relative_to(tmp_path)) for path in import_closure(start, tmp_path)}
    assert names == {
        "stages/__init__.py",
        "stages/one.py",
        "captioning/__init__.py",
        "captioning/pkg/__init__.py",
        "captioning/pkg/inner.py",
        "captioning/pkg/sub.py",
        "captioning/relative.py",
        "captioning/plain.py",
        "captioning/lazy.py",
    }
