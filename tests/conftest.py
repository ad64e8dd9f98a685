import json
import os
import resource
import sys
import time
from pathlib import Path

# three workers share two cores (`make test`): a BLAS pool of two threads per process spins against the
# others; one thread each, inherited by the stages the tests start (set before numpy loads its BLAS)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the reference's features kept by pipeline.memo: one folder for this test run (its workers and every stage
# they start inherit it), never the user's ~/.cache, so no earlier run's files take part
if "SAGAN_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SAGAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="sagan-test-features-")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

# the fault-injection suite's tally (tests/test_faults.py), printed at the end of the run
FAULTS = {"tried": 0, "survived": 0, "outputs_lost": 0}

# fixtures built once per module or session that several tests read (a repository after `dvc repro`,
# a grid's store, a trained evaluator): under pytest-xdist (`make test` runs three workers) the tests
# that share one go to the same worker, so it is built once; every other test goes wherever a worker
# is free. (`prepared` is shared across workers through a file lock instead.)
SHARED_FIXTURES = ("repo", "grid_repo", "ray_cluster", "reference", "trained", "real_feats", "now")


def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = [name for name in SHARED_FIXTURES if name in getattr(item, "fixturenames", ())]
        if shared:
            group = f"{item.module.__name__}.{shared[0]}"
            item.add_marker(pytest.mark.xdist_group(group))
            if getattr(config.option, "loadgroup", False) and "@" not in item.nodeid:
                item._nodeid = f"{item.nodeid}@{group}"  # xdist's own hook may already have run


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its tally goes to the controller
        session.config.workeroutput["faults"] = dict(FAULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for key, n in getattr(node, "workeroutput", {}).get("faults", {}).items():
        FAULTS[key] += n


def pytest_terminal_summary(terminalreporter):
    if FAULTS["tried"]:
        terminalreporter.write_line(f"fault injection: {FAULTS['tried']} faults tried, {FAULTS['survived']} survived, "
                                    f"outputs lost: {FAULTS['outputs_lost']}")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A repository with the shared stages (prepare, train_evaluator) done, built once per session:
    pass it to `make_repo(..., template=prepared)`."""
    from e2e import prepared_template

    return prepared_template(tmp_path_factory)


# SAGAN_TEST_CPU=FILE: each test's CPU seconds (this process and the children it waited for, setup
# and teardown included) appended to FILE as JSON lines: where the suite's CPU goes, unlike
# --durations' wall times, which depend on what else shares the cores
_CPU_LOG = os.environ.get("SAGAN_TEST_CPU")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t0 = time.time()
    yield
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = [a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before)]
    with open(_CPU_LOG, "a") as f:
        f.write(json.dumps({"test": item.nodeid, "self_s": round(cpu[0], 2), "children_s": round(cpu[1], 2),
                            "wall_s": round(time.time() - t0, 2)}) + "\n")
