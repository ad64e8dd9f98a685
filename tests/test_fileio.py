"""Atomic writes (pipeline/fileio.py): the same tensors give the same bytes wherever they are saved, so DVC's
md5 of a weights file changes only when the weights do."""
import hashlib

import torch

from pipeline.fileio import torch_load, torch_save


def test_the_same_tensors_saved_to_two_files_give_the_same_bytes(tmp_path):
    state = {"w": torch.arange(12.0).reshape(3, 4), "step": torch.tensor(7)}
    torch_save(state, tmp_path / "a.pt")
    torch_save(state, tmp_path / "other" / "b.pt")
    md5 = [hashlib.md5((p).read_bytes()).hexdigest() for p in (tmp_path / "a.pt", tmp_path / "other" / "b.pt")]
    assert md5[0] == md5[1]
    assert torch.equal(torch_load(tmp_path / "a.pt")["w"], state["w"])
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind
