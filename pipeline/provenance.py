"""What a run's numbers came from, and so which runs may be compared: a run's batch key (BATCH_FIELDS:
machine class, device, precision, training code, metrics code version, evaluator) from its tags. The grid
asks it before it resumes a grid (pipeline/grid/batch.py), the report to split a grid's runs into batches.

Training code is the code that decides a run's numbers: the modules that the train, sample and evaluate
stages import (read from a commit's sources, as Python imports them), and the C++ the attention kernel
compiles, less NOT_NUMBERS (modules that only log, record or draw what the run computed). Its key is a
hash of those files' paths and contents, so a commit that changes or moves anything else (the report,
the grid runners, the docs) trains alike and keeps the key; one that changes or moves training code
gets a new one."""
from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path

BATCH_FIELDS = ("machine", "device", "precision", "training code", "metrics code", "evaluator")
UNRECORDED = "unrecorded"

# the stage entry points whose imports make a run's numbers
RUN_STAGES = ("stages.train", "stages.sample", "stages.evaluate")
# modules those stages import that cannot change a number: MLflow logging, the run's record, its images
NOT_NUMBERS = ("pipeline.tracking", "pipeline.store", "pipeline.records", "pipeline.records.export",
               "pipeline.records.format", "pipeline.generator_model", "pipeline.visualize")
KERNEL_MODULE, KERNEL_SOURCES = "pipeline.fast_attention", "pipeline/csrc/"

ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str, files: Mapping[str, str]) -> str | None:
    base = name.replace(".", "/")
    for path in (f"{base}.py", f"{base}/__init__.py"):
        if path in files:
            return path
    return None


def _imports(name: str, path: str, source: str) -> set[str]:
    """The project modules (`pipeline.*`, `stages.*`) a module imports anywhere (a lazy import runs on some
    path), with the packages above each."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    out = set()
    for mod in found:
        parts = mod.split(".")
        if parts[0] in ("pipeline", "stages"):
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return out


def training_files(files: Mapping[str, str]) -> list[str]:
    """The training code among `files` (repository path -> source): the closure of RUN_STAGES' imports less
    NOT_NUMBERS, as file paths, with the kernel's C++ sources when the kernel is imported."""
    seen: set[str] = set()
    todo = [*RUN_STAGES, *{m.rpartition(".")[0] for m in RUN_STAGES}]  # and their package
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_NUMBERS:
            continue
        seen.add(name)
        path = _module_file(name, files)
        if path:
            todo += sorted(_imports(name, path, files[path]))
    paths = {p for name in seen if (p := _module_file(name, files))}
    if KERNEL_MODULE in seen:
        paths |= {p for p in files if p.startswith(KERNEL_SOURCES)}
    return sorted(paths)


@functools.lru_cache(maxsize=None)
def training_code(commit: str, repo: Path = ROOT) -> str:
    """A commit's training code as a short key (8 hex digits of the hash of its files' paths and blobs;
    training_files); "commit <hash>" when git cannot tell (not a repository, or a commit it does not have)."""
    try:
        listing = [ln.split(None, 3) for ln in subprocess.run(
            ["git", "-C", str(repo), "ls-tree", "-r", commit, "--", "pipeline", "stages"], capture_output=True,
            text=True, check=True, timeout=60).stdout.splitlines()]
        blobs = {path: sha for _, kind, sha, path in listing if kind == "blob"}
        py = [p for p in blobs if p.endswith(".py")]
        out = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch"], input="".join(f"{blobs[p]}\n" for p in py).encode(),
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return f"commit {commit[:12]}"
    files, pos = {p: "" for p in blobs}, 0
    for p in py:  # each answer: "<sha> blob <size>\n<content>\n"
        end = out.index(b"\n", pos)
        size = int(out[pos:end].split()[2])
        files[p] = out[end + 1:end + 1 + size].decode()
        pos = end + 1 + size + 1
    kept = training_files(files)
    if not kept:
        return f"commit {commit[:12]}"
    return hashlib.sha256("\n".join(f"{blobs[p]} {p}" for p in kept).encode()).hexdigest()[:8]


def batch_key_of_tags(tags: Mapping[str, str]) -> tuple[str, ...]:
    """What the runs of a pair must share (BATCH_FIELDS), from a run's tags (MLflow's, a record's, or those a
    run here would log): machine class (CPU design and class, or GPU), device, precision, training code
    (training_code of its commit), metrics code version and evaluator checksum. A field a run did not
    record (a converted pilot record) is its own value, `unrecorded`."""
    device = tags.get("runtime.device") or UNRECORDED
    if device.startswith("cuda"):
        machine = tags.get("machine.gpu") or UNRECORDED
    else:
        machine = tags.get("machine.cpu_uarch") or tags.get("machine.cpu") or UNRECORDED
        if tags.get("machine.cpu_class"):
            machine += f", {tags['machine.cpu_class']}"
    commit = tags.get("git.commit")
    return (machine, device, tags.get("runtime.precision") or UNRECORDED,
            training_code(commit) if commit else UNRECORDED, tags.get("metrics.version") or UNRECORDED,
            (tags.get("evaluator.sha256") or UNRECORDED)[:12])
