"""The recipe search's table (bench/search_summary.py): the paired difference per seed, and no pairing
across batches."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = {"class": "amx", "device": "cpu", "precision": "bf16"}


def _write(path: Path, seed: int, fid: float, batch: dict | None = BATCH) -> None:
    row = {"seed": seed, "step": 6000, "variant": "sampler", "fid": fid, "classifier_score": 8.0,
           "precision": 0.7, "recall": 0.9, "images_per_s": 100.0}
    record = {"params": {}, "rows": [row]} | ({"batch": batch} if batch else {})
    path.write_text(json.dumps(record))


def _summary(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench/search_summary.py"), *map(str, files)],
                          capture_output=True, text=True)


def test_a_candidate_is_compared_seed_by_seed_with_the_default(tmp_path):
    for seed, (ref, cand) in enumerate([(28.0, 22.0), (21.0, 17.0), (20.0, 14.0)]):
        _write(tmp_path / f"default.s{seed}.json", seed, ref)
        _write(tmp_path / f"r1g1.s{seed}.json", seed, cand)
    res = _summary(*sorted(tmp_path.glob("*.json")))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("r1g1"))
    # differences -6, -4, -6: mean -5.33, t(2) half-width 4.303 * 1.155 / sqrt(3) = 2.87
    assert "-5.33 ± 2.87" in line, line


def test_files_of_two_batches_are_not_paired(tmp_path):
    _write(tmp_path / "default.s0.json", 0, 20.0)
    _write(tmp_path / "r1g1.s0.json", 0, 15.0, {**BATCH, "class": "avx2", "precision": "fp32"})
    res = _summary(tmp_path / "default.s0.json", tmp_path / "r1g1.s0.json")
    assert res.returncode != 0
    assert "2 batches" in res.stderr and "summarise one at a time" in res.stderr
