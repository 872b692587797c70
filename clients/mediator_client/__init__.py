"""mediator_client: guest agents and operator tools for mediatord.

A guest agent stands in for a guest kernel's PSCI and EEMI drivers: it sends the
exact raw SMCs of the wire contract for one domain and handles what happens to
its vCPUs. ``psci`` and ``eemi`` build the calls by their spec names;
:class:`AsyncGuestAgent` (or the blocking :class:`GuestAgent`) sends them.
"""

from mediator_client import eemi, psci
from mediator_client.agent import AsyncGuestAgent, GuestAgent, SuspendReport, VcpuHandler
from mediator_client.calls import Call, ClientTls, Event
from mediator_client.errors import (
    DomainGoneError,
    EemiError,
    MediatorError,
    NotPermittedError,
    NotRunningError,
    PsciError,
    UnavailableError,
)
from mediator_client.operator import Operator

__all__ = [
    "AsyncGuestAgent",
    "Call",
    "ClientTls",
    "DomainGoneError",
    "EemiError",
    "Event",
    "GuestAgent",
    "MediatorError",
    "NotPermittedError",
    "NotRunningError",
    "Operator",
    "PsciError",
    "SuspendReport",
    "UnavailableError",
    "VcpuHandler",
    "eemi",
    "psci",
]
