"""The README and docs/ against the repository: no machine's absolute paths in tracked files, the README's
answer table equal to the published report, every quoted time a row of docs/times.md, links that resolve."""
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMES = ROOT / "docs" / "times.md"
MAX_BYTES = 1024 * 1024

# ------------------------------------------------------------------ absolute paths of a machine

# a checkout, home or store location of one machine: the top-level folders work, root, mnt and scratch;
# home and Users with a user name; tmp with something in it; macOS temp folders; a Windows user folder. Not
# when the slash continues a word, a relative path or a variable (DVC's own tmp folder, a folder under
# $HOME, a URL's path); a URI's slashes may precede (file, sqlite). Every pattern below is split so that
# this file does not match itself.
_SEG = ["wo" + "rk", "ro" + "ot", "mn" + "t", "scr" + "atch"]
MACHINE_PATH = re.compile(
    r"(?<![\w.~$}\-])/(?:" + "|".join(_SEG) + r")(?![\w.-])"
    r"|(?<![\w.~$}\-])/(?:" + "ho" + r"me|" + "Us" + r"ers)/[\w.-]+"
    r"|(?<![\w.~$}\-])/" + "tm" + r"p/[\w.-]"
    r"|(?<![\w.~$}\-])(?:/private)?/va" + r"r/folders/"
    r"|\b[A-Za-z]:\\" + "Us" + r"ers\\")

# legitimate strings: (tracked file, exact text of the match's line that makes it legitimate)
ALLOWED = {
    # a usage example writing its JSON to the system's temp folder, not a checkout or a store
    ("bench/bench_grid_runners.py", "--json /" + "tmp/runners.json"),
    ("bench/bench_tracking.py", "--json /" + "tmp/one.json"),
}


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line of `text` naming a machine's absolute path."""
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]


def _tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


@pytest.mark.parametrize("text", [
    "cd /" + "work/main && make", "sqlite:////" + "work/main/mlflow.db", "HOME=/" + "root",
    "/" + "root/.cache/x", "/" + "home/alice/sagan", "file:///" + "home/bob/x", "/" + "Users/carol/repo",
    "--out /" + "tmp/sagan-grid", "/" + "mnt/data/x", "/private/va" + "r/folders/xy/T/", "C:\\" + "Users\\dan",
])
def test_machine_paths_are_found(text):
    assert machine_paths(f"see {text} there")


@pytest.mark.parametrize("text", [
    ".dvc/" + "tmp/grid-queue-start.log", "$HOME/" + "work/x", "${TMPDIR}/" + "tmp/x",
    "https://example.org/" + "home/x", "the `/" + "tmp` harness", "/usr/bin/chromium", "/data/params.ok",
    "results/" + "work/x", "sqlite:///<" + "root>/mlflow.db",
])
def test_legitimate_paths_pass(text):
    assert not machine_paths(text)


def test_no_machine_paths_in_tracked_files():
    """No tracked text file names a directory of one machine (a checkout, home, store or output folder):
    scripts take such places as variables or paths beside the checkout."""
    found = []
    for name, text in _tracked_text_files():
        for i, line in machine_paths(text):
            if not any(name == f and allowed in line for f, allowed in ALLOWED):
                found.append(f"{name}:{i}: {line.strip()[:160]}")
    assert not found, "absolute paths of a machine (use a variable or a repo-relative path):\n" + "\n".join(found)


# ------------------------------------------------------------------ the README's answer = the report

def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _numbers(cell: str) -> list[str]:
    return re.findall(r"[+-]?\d+\.\d+", cell.replace("−", "-"))


def _close(shown: str, value: float) -> bool:
    """`value` rounds to `shown` (to the decimals shown; a tie either way)."""
    decimals = len(shown.split(".")[1])
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-12


def test_readme_answer_table_is_the_published_report():
    """Each number of the README's answer table (a contrast's estimate and its Holm interval, per metric)
    and its verdict equal the published report's (reports/ablation.json) to the rounding shown; the table
    holds every FID and classifier-score main effect; the margins quoted above it are the report's."""
    report = json.loads((ROOT / "reports" / "ablation.json").read_text())
    section = _readme_section("The answer")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("|")]
    header, rows = rows[0], [r for r in rows[2:]]
    metric_cols = {"fid": next(i for i, h in enumerate(header) if h.startswith("FID")),
                   "classifier_score": next(i for i, h in enumerate(header) if h.startswith("classifier score"))}
    assert all(header[i + 1] == "verdict" for i in metric_cols.values()), header
    contrasts = {(c["metric"], c["a"], c["b"]): c for c in report["contrasts"]}
    seen = set()
    for row in rows:
        assert len(row) == len(header), row
        a, b = (s.strip() for s in row[0].split("−"))
        for metric, col in metric_cols.items():
            c = contrasts[(metric, a, b)]
            est, lo, hi = _numbers(row[col])
            assert _close(est, c["mean_diff"]), (row[0], metric, est, c["mean_diff"])
            assert _close(lo, c["ci_holm"][0]) and _close(hi, c["ci_holm"][1]), (row[0], metric, lo, hi, c["ci_holm"])
            assert row[col + 1] == c["verdict"], (row[0], metric, row[col + 1], c["verdict"])
            seen.add((metric, a, b))
    assert seen == {k for k in contrasts if k[0] in metric_cols}, "the table holds every FID and classifier-score contrast"
    margins = report["margins"]["metrics"]
    fid_margin = re.search(r"FID ±(\d+\.\d+)", section).group(1)
    cs_margin = re.search(r"classifier score ±(\d+\.\d+)", section).group(1)
    assert _close(fid_margin, margins["fid"]["value"]) and _close(cs_margin, margins["classifier_score"]["value"])
    assert report["grid"] in section and f"{report['budget']['steps']:,}" in section


# ------------------------------------------------------------------ times: one table

TIME = re.compile(r"(\d[\d,]*(?:\.\d+)?) ?(min|s|h|ms|img/s)(?![\w/])")


def test_times_table_has_its_columns():
    rows = [line for line in TIMES.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["what", "figure", "CPU class", "threads / precision", "date", "command"]
    assert all(line.count("|") == rows[0].count("|") for line in rows), "every row has every column"
    assert len(rows) > 20


def test_readme_times_are_rows_of_the_times_table():
    """A time the README states is a figure of docs/times.md, and the README links it."""
    readme, times = README.read_text(), TIMES.read_text()
    assert "docs/times.md" in readme
    quoted = [m.group(0) for m in TIME.finditer(readme)]
    assert quoted, "the README states the default run's time"
    missing = [q for q in quoted if q not in times]
    assert not missing, f"README times not in docs/times.md: {missing}"


def test_docs_that_quote_times_cite_the_times_table():
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name in ("times.md", "params.md"):
            continue
        text = page.read_text()
        if TIME.search(text):
            assert "times.md" in text, f"{page.name} states times: cite docs/times.md"


# ------------------------------------------------------------------ links

def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"#{1,6} ", line)}


def test_links_of_the_readme_and_docs_resolve():
    """Every relative link of README.md and docs/*.md names a file that exists, and a heading of it
    where it names one."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
