"""Checkpoint files: which params identify a training (a checkpoint made from others is refused), and
writing and reading the file (what is in it is the trainer's `state_dict()`). They live under
<root>/checkpoints/<params hash>.pt, outside DVC's outputs (DVC deletes outputs before a stage runs), so a rerun after Ctrl-C or kill -9 picks up where it stopped.
The one before stays as <params hash>.prev.pt: a damaged latest file falls back to it."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.fileio import atomic_path, torch_load

log = logging.getLogger(__name__)

# Keys that change how a run is operated, not what it computes: they may differ on resume.
OPERATIONAL_KEYS = ("checkpoint_every", "log_every", "threads", "snapshot_every", "device", "compile",
                    "attention_kernel", "full_eval_at")


def training_params(p: Params) -> dict[str, Any]:
    """The params that determine the trained weights (resume refuses a checkpoint made from others)."""
    train = {k: v for k, v in asdict(p.train).items() if k not in OPERATIONAL_KEYS}
    return {"seed": p.seed, "model": asdict(p.model), "attention": asdict(p.attention),
            "loss": asdict(p.loss), "train": train}


def params_hash(p: Params, data_sha: str) -> str:
    blob = json.dumps({**training_params(p), "data": data_sha}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {vb!r} -> {va!r}")
    return out


# ---------------------------------------------------------------- the file


def previous(path: Path) -> Path:
    """Where the last good checkpoint before `path`'s is kept."""
    return path.with_name(path.stem + ".prev" + path.suffix)


def save(state: dict[str, Any], path: Path) -> None:
    """Writes `state` (a trainer's state_dict: tensors and strings, so it loads with weights_only=True)
    completely, then keeps the current file as `previous(path)` and puts the new one in its place: a failed
    write (disk full) leaves both earlier files as they were."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            with open(tmp, "wb") as f:  # not the path: torch would name the archive after the temp file
                torch.save(state, f)
            if path.exists():
                os.replace(path, previous(path))
    except (OSError, RuntimeError) as e:  # torch's file writer raises RuntimeError for a failed write
        kept = [str(q) for q in (path, previous(path)) if q.exists()]
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise UserError(f"cannot write checkpoint {path} ({reason}); training stopped at step {state.get('step')}. "
                        f"Kept: {', '.join(kept) or 'nothing'}. Free space (or fix the folder) and rerun to resume.") from None


def remove(path: Path) -> None:
    """Both checkpoints of a finished run."""
    for q in (Path(path), previous(Path(path))):
        q.unlink(missing_ok=True)


def exists(path: Path) -> bool:
    return Path(path).exists() or previous(Path(path)).exists()


def _read(path: Path, device: str) -> dict:
    try:
        return torch_load(path, map_location=device)
    except Exception as e:  # noqa: BLE001 - a damaged file is a user-level problem
        raise UserError(f"checkpoint {path} cannot be read ({e}); delete it to start over") from None


def load(path: Path, device: str, p: Params, expected_hash: str) -> dict[str, Any]:
    """The state saved at `path` for the training of `p` (params hash `expected_hash`); a damaged or
    missing latest checkpoint falls back to the previous one (with a warning); one made from other
    params is refused, naming the keys that differ."""
    path, prev = Path(path), previous(Path(path))
    try:
        st = _read(path, device) if path.exists() else None
        if st is None:
            raise UserError(f"checkpoint {path} is missing")
    except UserError as e:
        if not prev.exists():
            raise
        log.warning("%s; resuming from the previous checkpoint %s instead", e, prev)
        st, path = _read(prev, device), prev
    if st.get("params_hash") != expected_hash:
        diff = diff_keys(training_params(p), json.loads(st.get("training_params", "{}")))
        raise UserError(f"checkpoint {path} was made with different params ({', '.join(diff) or 'data'}); "
                        f"it cannot be resumed with these. Delete it to start over.")
    return st
