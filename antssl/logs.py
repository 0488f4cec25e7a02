"""antssl's own log lines: what the command line shows, and how.

Stages report through :mod:`logging` under the ``antssl`` logger. The command line
(and the jobs/ entrypoints, which call it) shows INFO and above by default and DEBUG
with ``-v``; other libraries' loggers (Ray's among them) keep their own settings. INFO
lines are printed as they are, warnings and errors with a prefix. No handler is set at
import: a program embedding antssl configures logging itself.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

LOGGER = "antssl"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"antssl: {record.levelname.lower()}: {text}"
        if record.levelno < logging.INFO:
            return f"{record.name}: {text}"
        return text


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each line (or to a fixed stream when given), so
    a redirected stderr (pytest's capture, a job's log) gets the lines."""

    antssl = True

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:  # StreamHandler.__init__ sets it
        pass


def configure(
    verbose: bool = False, stream: IO[str] | None = None, propagate: bool | None = None
) -> None:
    """Show antssl's lines at INFO (DEBUG when ``verbose``) on ``stream`` (stderr).

    ``propagate=False`` keeps the lines from the root logger as well: in a process whose
    root logger already prints to the console (a Ray Train worker), each line would
    otherwise appear twice. Idempotent: calling it again replaces antssl's handler (one at
    a time).
    """
    logger = logging.getLogger(LOGGER)
    if propagate is not None:
        logger.propagate = propagate
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    handler = _Handler(stream)
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)


class RayConsoleFilter(logging.Filter):
    """For Ray Data's console handler (driver and workers, antssl's quiet mode): drops the
    records Ray Data hides itself (its ``hide`` attribute) and its notices that progress
    bars are off, which antssl turns off on purpose. Everything still reaches
    ``ray-data.log``."""

    NOTICES = ("Progress bars disabled", "Progress bars for operators disabled")

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "hide", False):
            return False
        return not str(record.msg).startswith(self.NOTICES)
