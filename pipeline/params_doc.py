"""The parameter table of docs/params.md, generated from the help text beside each key in
pipeline/config.py (`python -m pipeline.params_doc --readme` rewrites it; a test checks it is current)."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config import Params


def _allowed(tp, meta: dict) -> str:
    """What a key accepts, for the README's table."""
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return "{" + ", ".join(f"{f.name}: {_allowed(hints[f.name], f.metadata)}" for f in dataclasses.fields(tp)) + "}"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return ", ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _allowed(a, meta) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_allowed(typing.get_args(tp)[0], {})}"
    if origin is dict:
        return "mapping"
    name = {int: "int", float: "number", bool: "true, false", str: "text"}.get(tp, str(tp))
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open", False)
    if lo is not None and hi is not None:
        return f"{'(' if lo_open else '['}{lo}, {'2^32)' if hi == 2**32 - 1 else f'{hi}]'}"
    if lo is not None:
        return f"{'>' if lo_open else '≥'} {lo}"
    return name


def param_docs(cls=None, prefix: str = "") -> list[tuple[str, Any, str, str]]:
    """(dotted key, default, allowed values, help) of every key, in params.yaml's order."""
    cls = cls or Params
    hints = typing.get_type_hints(cls)
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            rows += param_docs(tp, key + ".")
        else:
            rows.append((key, getattr(defaults, f.name), _allowed(tp, f.metadata), f.metadata["help"]))
    return rows


def params_table() -> str:
    """The README's parameter table, generated from the help texts above (a key's choices are in its
    help text; numeric ranges are added in brackets)."""
    def show(v: Any) -> str:
        if dataclasses.is_dataclass(v):
            v = dataclasses.asdict(v)
        if isinstance(v, (list, dict)):
            return yaml.safe_dump(v, default_flow_style=True, width=1000, sort_keys=False).strip().removesuffix("...").strip()
        return json.dumps(v) if v is None or isinstance(v, bool) or v == "" else str(v)
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, allowed, help in param_docs():
        ranged = allowed.startswith(("[", "(", ">", "≥"))
        lines.append(f"| `{key}` | {show(default)} | {help}{f' ({allowed})' if ranged else ''} |")
    return "\n".join(lines) + "\n"


PARAMS_DOC = Path("docs/params.md")  # the table's page (the README links to it)
TABLE_START = "<!-- params table: generated from pipeline/config.py by `python -m pipeline.params_doc --readme` -->\n"
TABLE_END = "<!-- end of params table -->\n"


def readme_with_table(readme: str) -> str:
    """`readme` with the text between the table's markers replaced by the current table."""
    head, rest = readme.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + TABLE_START + params_table() + TABLE_END + tail


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipeline.params_doc",
                                 description="Print the parameter table (generated from the help text beside "
                                             f"each key), or write it into {PARAMS_DOC}.")
    ap.add_argument("--readme", type=Path, nargs="?", const=PARAMS_DOC,
                    help=f"rewrite the table between the markers of this page (default {PARAMS_DOC})")
    args = ap.parse_args()
    if args.readme:
        args.readme.write_text(readme_with_table(args.readme.read_text()))
    else:
        print(params_table(), end="")
