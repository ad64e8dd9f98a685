"""User-facing errors: stages print these as one line and exit non-zero, without a traceback."""
from pipeline.config import ParamsError


class UserError(RuntimeError):
    """Something the user can fix (a missing file, a bad checksum, a stale checkpoint)."""


USER_ERRORS = (UserError, ParamsError)
