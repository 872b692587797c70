"""Who is calling, and may they: identity from metadata and the authorization matrix.

Development listener (loopback TCP or a unix socket; design section 4):
- ``x-mediator-domain: <name>`` names the domain a Guest RPC acts for. Without
  another statement it is also the caller's identity.
- ``x-mediator-principal: domain/<name>`` or ``operator/<name>`` states the
  caller's identity explicitly (what a client certificate will carry on the TLS
  listener), so the matrix can be exercised without certificates.
- Control RPCs from a caller without identity metadata are served: on this
  listener, reaching the socket is the credential.

The matrix (principal kind x RPC): a domain may use the Guest RPCs for itself
only; the hardware domain may also read (GetSystem, ListDomains, WatchEvents);
operators and anonymous local callers may use every Control RPC and no Guest RPC
on behalf of a domain other than the one named.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc

from mediatord import logs

DOMAIN_KEY: Final = "x-mediator-domain"
PRINCIPAL_KEY: Final = "x-mediator-principal"
GUEST_SERVICE: Final = "mediator.v1.Guest"
CONTROL_SERVICE: Final = "mediator.v1.Control"
# Control RPCs a hardware domain needs to see the system (design section 4).
HARDWARE_DOMAIN_READS: Final = frozenset({"GetSystem", "ListDomains", "WatchEvents"})

log = logs.get("mediatord.auth")

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "domain" or "operator"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Decision:
    code: grpc.StatusCode | None  # None: allowed
    message: str = ""


ALLOW: Final = Decision(None)


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def parse_principal(text: str) -> Principal | None:
    kind, _, name = text.partition("/")
    if kind not in ("domain", "operator") or not name:
        return None
    return Principal(kind, name)


def decide(
    service: str,
    method: str,
    metadata: Iterable[tuple[str, str | bytes]] | None,
    hardware_domain: Callable[[str], bool | None],
) -> Decision:
    """The whole authorization matrix for the development listener."""
    target = metadata_value(metadata, DOMAIN_KEY)
    stated = metadata_value(metadata, PRINCIPAL_KEY)
    principal: Principal | None = None
    if stated is not None:
        principal = parse_principal(stated)
        if principal is None:
            return Decision(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{PRINCIPAL_KEY} must be domain/<name> or operator/<name>, got {stated!r}",
            )
    elif target is not None:
        principal = Principal("domain", target)

    if principal is not None and principal.kind == "domain":
        is_hardware = hardware_domain(principal.name)
        if is_hardware is None:
            return Decision(grpc.StatusCode.UNAUTHENTICATED, f"no domain named {principal.name!r}")
    else:
        is_hardware = False

    if service == GUEST_SERVICE:
        if target is None:
            return Decision(
                grpc.StatusCode.UNAUTHENTICATED,
                f"Guest RPCs need metadata {DOMAIN_KEY}: <domain name>",
            )
        if principal is None or principal.kind != "domain" or principal.name != target:
            return Decision(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal} may not act for domain {target!r}: a domain calls only "
                "for its own vCPUs",
            )
        return ALLOW
    if service == CONTROL_SERVICE:
        if principal is None or principal.kind == "operator":
            return ALLOW
        if is_hardware and method in HARDWARE_DOMAIN_READS:
            return ALLOW
        allowed = "only GetSystem, ListDomains and WatchEvents" if is_hardware else "no Control RPC"
        return Decision(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{principal} may not call Control.{method}: a "
            f"{'hardware domain' if is_hardware else 'domain'} may use {allowed}",
        )
    return ALLOW  # health and reflection


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Applies :func:`decide` to every RPC before its handler runs."""

    def __init__(self, hardware_domain: Callable[[str], bool | None]) -> None:
        self._hardware_domain = hardware_domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        full = handler_call_details.method  # "/mediator.v1.Guest/Call"
        service, _, method = full.lstrip("/").partition("/")
        decision = decide(
            service, method, handler_call_details.invocation_metadata, self._hardware_domain
        )
        handler = await continuation(handler_call_details)
        if decision.code is None or handler is None:
            return handler
        log.warning("refused", rpc=full, code=decision.code.name, reason=decision.message)
        return _refusing(handler, decision)


def _refusing(handler: Handler, decision: Decision) -> Handler:
    """A handler of the same shape as ``handler`` that only aborts."""
    code = decision.code
    assert code is not None

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, decision.message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, decision.message)
        yield  # pragma: no cover - makes this an async generator

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)
