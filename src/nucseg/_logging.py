"""How nucseg's log records reach the terminal: one line per problem.

Warnings and errors print as ``nucseg: warning: ...`` and ``nucseg: error: ...`` (the command's
own error lines look the same); with ``-v`` INFO records print with their level and logger.
Libraries' own logs (Dask's start-up and shutdown chatter, tifffile's multi-line warnings on a
damaged file) stay below WARNING unless ``-v``: nucseg reports what they mean, once. Used by the
command line and by the worker processes of a local Dask cluster.
"""

from __future__ import annotations

import logging
import os

__all__ = ["QUIET_LOGGERS", "OneLine", "setup_logging"]

#: Libraries whose logs are silenced unless ``verbose``.
QUIET_LOGGERS = ("tifffile", "distributed", "dask", "tornado", "asyncio", "bokeh")


class OneLine(logging.Formatter):
    """Warnings and errors as ``nucseg: warning: ...`` / ``nucseg: error: ...`` lines; other
    records (``-v``) with their level and logger."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING and not record.exc_info:
            word = "warning" if record.levelno == logging.WARNING else "error"
            return f"nucseg: {word}: " + record.getMessage().replace("\n", " ")
        return super().format(record)


def setup_logging(*, verbose: bool) -> None:
    """Send the root logger's records to stderr through :class:`OneLine` (replacing its
    handlers), at INFO with ``verbose`` and WARNING otherwise; silence :data:`QUIET_LOGGERS`
    unless ``verbose``."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # read by dask when first imported, here and in a local cluster's worker processes
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
