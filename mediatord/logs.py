"""Structured logging: JSON lines for machines, key=value for a console.

One call, :func:`configure`, at start-up. Everything logs through structlog's
stdlib-free pipeline writing to stderr (stdout is for command output).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")

# The RPC a line is logged in: (request id, method, principal or None), set once
# per RPC by the gate. One variable set per RPC instead of structlog's bound
# contextvars (a variable per key, looked up by name): the RPC pays one set, and
# the principal is formatted only when a line is logged.
RPC: contextvars.ContextVar[tuple[int, str, object] | None] = contextvars.ContextVar(
    "mediatord_rpc", default=None
)


def merge_rpc(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Every line logged inside an RPC carries its request_id, rpc and principal
    (a key the line sets itself wins, as with structlog's merge_contextvars)."""
    rpc = RPC.get()
    if rpc is not None:
        request_id, method, principal = rpc
        event_dict.setdefault("request_id", request_id)
        event_dict.setdefault("rpc", method)
        event_dict.setdefault("principal", "-" if principal is None else str(principal))
    return event_dict


def configure(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Set the level and renderer: ``auto`` is key=value on a TTY, JSON otherwise."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.processors.KeyValueRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_rpc,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger for module-level use: lazy, so it follows a later :func:`configure`."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
