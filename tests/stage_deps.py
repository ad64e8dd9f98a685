"""The project modules a stage's process can import (its code deps), read from the source with `ast`:
every `import` of a `pipeline` or `stages` module anywhere in a module (functions included: a lazy import
runs on some path), and the packages above each; the C++ sources the attention extension compiles go with
`pipeline/fast_attention.py`. Used by tests/test_stage_deps.py to check dvc.yaml and the import graph."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
# files a module reads as code at run time, beside its imports
DATA_DEPS = {"pipeline.fast_attention": sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline/csrc").glob("*"))}


def module_path(name: str) -> Path | None:
    """The source file of a project module or package, or None if `name` is neither."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, type_checking: bool = False) -> set[str]:
    """The project modules `name` imports directly (TYPE_CHECKING blocks, which never run, only if asked)."""
    path = module_path(name)
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = set() if type_checking else {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
        for n in ast.walk(node) if n is not node}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from pipeline import cpu` imports the module pipeline.cpu; `from pipeline.cpu import x` pipeline.cpu
            names = [f"{base}.{a.name}" if module_path(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] in PACKAGES:
                while n and not module_path(n):  # `import pipeline.grid.spec as s` -> that module
                    n = n.rpartition(".")[0]
                if n:
                    found.add(n)
    return found


def with_packages(name: str) -> set[str]:
    """`name` and the packages above it (importing a module runs their __init__ first)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(name: str) -> set[str]:
    """Every project module that importing `name` can import, `name` included."""
    seen: set[str] = set()
    todo = list(with_packages(name))
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for dep in imports_of(m):
            todo += [x for x in with_packages(dep) if x not in seen]
    return seen


def code_files(name: str) -> set[str]:
    """The files (relative to the repository) of the modules in `closure(name)` and their data deps."""
    files = set()
    for m in closure(name):
        files.add(module_path(m).relative_to(ROOT).as_posix())
        files.update(DATA_DEPS.get(m, ()))
    return files


def import_graph() -> dict[str, set[str]]:
    """Every module of `pipeline/` -> the project modules it imports, anywhere in it (a lazy import and a
    TYPE_CHECKING one are still a dependency of the design)."""
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for p in sorted((ROOT / "pipeline").rglob("*.py"))]
    return {n: {d for d in imports_of(n, type_checking=True) if d.startswith("pipeline")} for n in names}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself): each
    is an import circle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next((c for c in children if c in graph), None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph[v]:
                    cycles.append(sorted(comp))
    return cycles


def dvc_code_deps(deps: list[str]) -> set[str]:
    """A stage's deps in dvc.yaml that are code (under pipeline/ or stages/), folders expanded to their files."""
    files = set()
    for dep in deps:
        if not dep.startswith(PACKAGES):
            continue
        path = ROOT / dep
        if path.is_dir():
            files |= {q.relative_to(ROOT).as_posix() for q in path.rglob("*")
                      if q.is_file() and "__pycache__" not in q.parts}
        else:
            files.add(dep)
    return files


def stage_module(cmd: str) -> str | None:
    """`python -m stages.train` -> 'stages.train'."""
    parts = cmd.split()
    return parts[parts.index("-m") + 1] if "-m" in parts else None


if __name__ == "__main__":  # each stage's code deps, as dvc.yaml should list them
    import yaml

    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        print(f"{name}:")
        for f in sorted(code_files(stage_module(stage["cmd"]))):
            print(f"      - {f}")
