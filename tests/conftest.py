import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# the fault-injection suite's tally (tests/test_faults.py), printed at the end of the run
FAULTS = {"tried": 0, "survived": 0, "outputs_lost": 0}

# fixtures built once per module or session that several tests read (a repository after `dvc repro`,
# a grid's store, a trained evaluator): under pytest-xdist (`make test` runs three workers) the tests
# that share one go to the same worker, so it is built once; every other test goes wherever a worker
# is free. (`prepared` is shared across workers through a file lock instead.)
SHARED_FIXTURES = ("repo", "grid_repo", "reference", "trained", "real_feats", "now")


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
