import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# the fault-injection suite's tally (tests/test_faults.py), printed at the end of the run
FAULTS = {"tried": 0, "survived": 0, "outputs_lost": 0}


def pytest_terminal_summary(terminalreporter):
    if FAULTS["tried"]:
        terminalreporter.write_line(f"fault injection: {FAULTS['tried']} faults tried, {FAULTS['survived']} survived, "
                                    f"outputs lost: {FAULTS['outputs_lost']}")
