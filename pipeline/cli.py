"""What every stage entry point shares: load params first, turn user errors into one clear line."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from pipeline.config import Params, load_params
from pipeline.errors import USER_ERRORS


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params()  # validated before any work starts
        main(params)
    except USER_ERRORS as e:
        print(f"error ({name}): {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)
