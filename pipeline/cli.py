"""What every stage entry point shares: `--help`, params loaded first, user errors as one clear line."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from pipeline.config import Params, load_params
from pipeline.errors import USER_ERRORS


def parse_stage_args(name: str, argv: list[str] | None = None) -> None:
    """A stage takes no arguments (params.yaml drives it): `--help` describes it, anything else is refused
    before any work starts."""
    doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
    argparse.ArgumentParser(
        prog=f"python -m stages.{name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="It takes no arguments: params.yaml drives it (change a value with `dvc exp run -S key=value`). "
               "DVC runs it as part of `dvc repro`.").parse_args(argv)


def run_stage(name: str, main: Callable[[Params], None],
              preflight: Callable[[Params], None] | None = None) -> None:
    """`preflight`: what must hold before any work (a stage that talks to MLflow passes
    pipeline.store.preflight: the store answers)."""
    parse_stage_args(name)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params()  # validated before any work starts
        if preflight:
            preflight(params)
        main(params)
    except USER_ERRORS as e:
        print(f"error ({name}): {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)
