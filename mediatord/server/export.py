"""The state as one JSON document: ``mediatorctl state export`` (through the
Control.ExportState RPC) and ``mediatord check-state`` (offline) print the same.

The system and the domains are in the proto3 JSON mapping of SystemInfo and
DomainInfo (64-bit integers are strings there), so a tool that reads the RPCs
reads this too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from google.protobuf.json_format import MessageToDict

from mediatord.core import effects as fx
from mediatord.core.mediator import Mediator
from mediatord.journal import Damage
from mediatord.server import convert

EXPORT_FORMAT: Final = 1


def document(
    mediator: Mediator,
    queued: Mapping[int, tuple[str, Iterable[fx.DomainEvent]]],
    journal: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``queued``: each domain's VcpuEvents not yet acknowledged by its agent;
    ``journal``: where the journal stands (None: the daemon keeps no state)."""
    domains = sorted(mediator.system.domains.values(), key=lambda d: d.id)
    return {
        "format": EXPORT_FORMAT,
        "system": MessageToDict(convert.system_info(mediator), preserving_proto_field_name=True),
        "domains": [
            MessageToDict(convert.domain_info(d), preserving_proto_field_name=True) for d in domains
        ],
        "queued_events": {
            name: [
                MessageToDict(convert.vcpu_event(e), preserving_proto_field_name=True)
                for e in events
            ]
            for _, (name, events) in sorted(queued.items())
        },
        "journal": None if journal is None else dict(journal),
    }


def damage(found: Iterable[Damage]) -> list[dict[str, Any]]:
    return [
        {"where": d.where, "offset": d.offset, "lost": d.lost, "reason": d.reason} for d in found
    ]
