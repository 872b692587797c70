"""Who is calling, and may they: identity, the authorization matrix, per-caller limits.

The policy only: :class:`mediatord.server.gate.Gate` applies it to every RPC.

Identity:
- TLS listener (mTLS): the principal is the verified client certificate's SAN URI
  ``mediator://domain/<name>`` or ``mediator://operator/<name>`` (the CN, in the
  same form or as a bare domain name, as a fallback). Never metadata.
- Development listener (loopback TCP or a unix socket, design section 4):
  ``x-mediator-principal: domain/<name>`` or ``operator/<name>`` if given, else
  ``x-mediator-domain`` names the calling domain; without either the caller is an
  anonymous local user (reaching the socket is the credential).

The target of a Guest RPC is ``x-mediator-domain``, defaulting to the principal's
own domain. The matrix (:func:`decide`) is the whole policy, in one function:

| principal          | Guest RPCs          | Control reads | other Control |
|--------------------|---------------------|---------------|---------------|
| anonymous (dev)    | UNAUTHENTICATED     | yes           | yes           |
| operator/<n>       | PERMISSION_DENIED   | yes           | yes           |
| domain/<X>, for X  | yes                 | X = dom0 only | no            |
| domain/<X>, for Y  | PERMISSION_DENIED   | X = dom0 only | no            |
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import grpc

DOMAIN_KEY: Final = "x-mediator-domain"
PRINCIPAL_KEY: Final = "x-mediator-principal"
# Attach's acknowledgements ride in metadata, leaving the contract's messages as
# they are: the daemon names its numbering of the domain's events in the initial
# metadata, and an agent attaching again says the last event of it that it has.
EVENT_STREAM_KEY: Final = "x-mediator-event-stream"
LAST_EVENT_KEY: Final = "x-mediator-last-event"
LAST_EVENT_NONE: Final = "none"  # a new agent's first Attach
LAST_EVENT_NOTHING: Final = "0"  # an agent that has received nothing, not even the stream
URI_PREFIX: Final = "mediator://"
GUEST_SERVICE: Final = "mediator.v1.Guest"
CONTROL_SERVICE: Final = "mediator.v1.Control"
# Control RPCs a hardware domain may call: what it needs to see the system (design
# section 4), and the coordinated suspend it starts (issue 11).
HARDWARE_DOMAIN_CONTROL: Final = frozenset(
    {"GetSystem", "ListDomains", "WatchEvents", "RequestSystemSuspend"}
)
# Streams one principal may hold open at once (Attach, CallStream, WatchEvents).
MAX_STREAMS_PER_PRINCIPAL: Final = 16

# The domain an authorized Guest RPC acts for (read by the Guest servicer).
TARGET_DOMAIN: contextvars.ContextVar[str] = contextvars.ContextVar("target_domain")


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "domain", "operator", or "local" (anonymous on the development listener)
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


ANONYMOUS: Final = Principal("local", "anonymous")


@dataclass(frozen=True, slots=True)
class Decision:
    code: grpc.StatusCode | None  # None: allowed
    message: str = ""
    target: str = ""  # the domain a Guest RPC acts for


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def parse_principal(text: str) -> Principal | None:
    kind, _, name = text.removeprefix(URI_PREFIX).partition("/")
    if kind not in ("domain", "operator") or not name:
        return None
    return Principal(kind, name)


def certificate_principal(auth: Mapping[str, Iterable[bytes]]) -> Principal | None:
    """The identity a verified client certificate carries (SAN URI, else CN)."""
    for raw in auth.get("x509_subject_alternative_name", []):
        text = raw.decode(errors="replace")
        if text.startswith(URI_PREFIX):
            return parse_principal(text)
    for raw in auth.get("x509_common_name", []):
        text = raw.decode(errors="replace")
        return parse_principal(text) if "/" in text else Principal("domain", text)
    return None


def identify(
    auth: Mapping[str, Iterable[bytes]],
    metadata: Iterable[tuple[str, str | bytes]] | None,
    tls: bool,
) -> Principal | Decision:
    """Who the caller is, or why it cannot be said. ``tls``: the call came over
    the mTLS listener (``auth`` then holds the verified client certificate)."""
    if tls:
        principal = certificate_principal(auth)
        if principal is None:
            return Decision(
                grpc.StatusCode.UNAUTHENTICATED,
                "the client certificate carries no mediator://domain/<name> or "
                "mediator://operator/<name> identity",
            )
        return principal
    stated = metadata_value(metadata, PRINCIPAL_KEY)
    if stated is not None:
        principal = parse_principal(stated)
        if principal is None:
            return Decision(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{PRINCIPAL_KEY} must be domain/<name> or operator/<name>, got {stated!r}",
            )
        return principal
    domain = metadata_value(metadata, DOMAIN_KEY)
    return ANONYMOUS if domain is None else Principal("domain", domain)


def decide(
    service: str,
    method: str,
    principal: Principal,
    target: str | None,
    hardware_domain: Callable[[str], bool | None],
    *,
    tls: bool = False,
) -> Decision:
    """The whole authorization matrix."""
    is_hardware = False
    if principal.kind == "domain":
        known = hardware_domain(principal.name)
        if known is None:
            return Decision(grpc.StatusCode.UNAUTHENTICATED, f"no domain named {principal.name!r}")
        is_hardware = known
    if service == GUEST_SERVICE:
        if principal.kind == "local":
            return Decision(
                grpc.StatusCode.UNAUTHENTICATED,
                f"Guest RPCs need metadata {DOMAIN_KEY}: <domain name>",
            )
        if principal.kind != "domain":
            return Decision(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal} may not make guest calls: only a domain calls for its vCPUs",
            )
        if target is None and not tls:
            # Design section 4: on the development listener Guest RPCs always
            # name their domain; a certificate's own domain is the TLS default.
            return Decision(
                grpc.StatusCode.UNAUTHENTICATED,
                f"Guest RPCs need metadata {DOMAIN_KEY}: <domain name>",
            )
        target = target or principal.name
        if target != principal.name:
            return Decision(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal} may not act for domain {target!r}: a domain calls only "
                "for its own vCPUs",
            )
        return Decision(None, target=target)
    if service == CONTROL_SERVICE:
        if principal.kind in ("local", "operator"):
            return Decision(None)
        if is_hardware and method in HARDWARE_DOMAIN_CONTROL:
            # The domain it acts as (RequestSystemSuspend answers it, not asks it).
            return Decision(None, target=principal.name)
        allowed = (
            "only GetSystem, ListDomains, WatchEvents and RequestSystemSuspend"
            if is_hardware
            else "no Control RPC"
        )
        return Decision(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{principal} may not call Control.{method}: a "
            f"{'hardware domain' if is_hardware else 'domain'} may use {allowed}",
        )
    return Decision(None)  # health and reflection
