"""The one layer every RPC passes through: counted, identified, authorized.

It was two interceptors (metrics around auth); one wrapper per method instead of
two takes a coroutine level off every call and an async-generator level off every
stream message, which is most of what the daemon adds to grpc.aio's own cost per
message. The semantics stay those of the two nested layers: the grpc_server_*
metrics see everything the authorization does (a refusal is handled with its
code, and counted in ``mediatord_auth_denials_total``), and the time of every
RPC includes its admission. Health and reflection RPCs are counted, not
authorized. The policy itself (who may call what) is :mod:`mediatord.server.auth`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from mediatord import logs
from mediatord.server import auth
from mediatord.server.auth import ANONYMOUS, MAX_STREAMS_PER_PRINCIPAL, Decision, Principal
from mediatord.server.wrapping import WrapperCache, wrap

if TYPE_CHECKING:
    from mediatord.server.metrics import Metrics

    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

# Services whose RPCs are authorized (the others, health and reflection, are open).
GUARDED = frozenset({auth.GUEST_SERVICE, auth.CONTROL_SERVICE})
DENIED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})

log = logs.get("mediatord.auth")


class Gate(grpc.aio.ServerInterceptor):
    """grpc_server_* for every RPC; identity, authorization and the per-principal
    stream cap for the mediator's own services. It wraps each handler because the
    outcome and the peer's certificate are only visible on the call's context.

    ``tls``: whether any listener of the server is a TLS one. Only there does the
    call's auth context say anything (identity comes from the certificate); on
    the development listeners it comes from metadata, so a server without a TLS
    listener never reads the auth context (a dict built per call)."""

    def __init__(
        self, metrics: Metrics, hardware_domain: Callable[[str], bool | None], *, tls: bool
    ) -> None:
        self.metrics = metrics
        self._hardware_domain = hardware_domain
        self._tls = tls
        self.streams: Counter[Principal] = Counter()
        self.requests = 0
        self._wrapped = WrapperCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped.get(handler_call_details.method, handler, self._wrap)

    # ---- identity and authorization

    def authorize(
        self, full: str, service: str, method: str, context: Context
    ) -> tuple[Decision, Principal | None]:
        metadata = context.invocation_metadata()
        if self._tls:
            auth_context = context.auth_context()
            tls = list(auth_context.get("transport_security_type", ())) == [b"ssl"]
        else:
            auth_context, tls = {}, False
        found = auth.identify(auth_context, metadata, tls)
        if isinstance(found, Decision):
            decision = found
            principal: Principal | None = None
        else:
            principal = found
            target = auth.metadata_value(metadata, auth.DOMAIN_KEY)
            decision = auth.decide(
                service, method, principal, target, self._hardware_domain, tls=tls
            )
        return decision, principal

    def stream_opened(self, principal: Principal) -> bool:
        if principal.kind != "local" and self.streams[principal] >= MAX_STREAMS_PER_PRINCIPAL:
            return False
        self.streams[principal] += 1
        return True

    def stream_closed(self, principal: Principal) -> None:
        self.streams[principal] -= 1
        if self.streams[principal] <= 0:
            del self.streams[principal]

    # ---- the wrapper of one method

    def _wrap(self, full: str, handler: Handler) -> Handler:
        """``handler``'s shape, whose calls are measured and, for the mediator's
        services, admitted first."""
        metrics = self.metrics
        service, _, method = full.lstrip("/").partition("/")
        kind = _grpc_type(handler)
        started = metrics.started.labels(kind, service, method)
        timing = metrics.handling.labels(kind, service, method)
        handled: dict[str, Any] = {}  # grpc_code -> counter child, looked up once
        perf_counter = time.perf_counter

        def done(context: Context, began: float, error: BaseException | None) -> None:
            code = _code(context, error)
            child = handled.get(code)
            if child is None:
                child = handled[code] = metrics.handled.labels(kind, service, method, code)
            child.inc()
            timing.observe(perf_counter() - began)
            if code in DENIED:
                metrics.denials.labels(method, code).inc()

        def admit(context: Context) -> tuple[Decision, Principal | None]:
            decision, principal = self.authorize(full, service, method, context)
            self.requests += 1
            # Every log line of this RPC carries its id, method and caller (the
            # refusal's too, so it is set first).
            logs.RPC.set((self.requests, full, principal))
            if decision.code is not None:
                log.warning("refused", code=decision.code.name, reason=decision.message)
            elif decision.target:
                auth.TARGET_DOMAIN.set(decision.target)
            return decision, principal

        async def around_unary(behaviour: Any, request: Any, context: Context) -> Any:
            started.inc()
            began = perf_counter()
            error: BaseException | None = None
            try:
                decision, _ = admit(context)
                if decision.code is not None:
                    await context.abort(decision.code, decision.message)
                return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                done(context, began, error)

        async def around_stream(
            behaviour: Any, request: Any, context: Context
        ) -> AsyncIterator[Any]:
            started.inc()
            began = perf_counter()
            error: BaseException | None = None
            try:
                decision, principal = admit(context)
                if decision.code is not None:
                    await context.abort(decision.code, decision.message)
                holder = principal or ANONYMOUS
                if not self.stream_opened(holder):
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{holder} already holds {MAX_STREAMS_PER_PRINCIPAL} open streams",
                    )
                try:
                    async for response in behaviour(request, context):
                        yield response
                finally:
                    self.stream_closed(holder)
            except BaseException as exc:
                error = exc
                raise
            finally:
                done(context, began, error)

        # Health and reflection: the arounds above without the admission. Written
        # out rather than sharing the measuring with them, which would put a
        # coroutine (or generator) level back on every call.
        async def counted_unary(behaviour: Any, request: Any, context: Context) -> Any:
            started.inc()
            began = perf_counter()
            error: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                done(context, began, error)

        async def counted_stream(
            behaviour: Any, request: Any, context: Context
        ) -> AsyncIterator[Any]:
            started.inc()
            began = perf_counter()
            error: BaseException | None = None
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                done(context, began, error)

        if service in GUARDED:
            return wrap(handler, around_unary, around_stream)
        return wrap(handler, counted_unary, counted_stream)


def _grpc_type(handler: Handler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(context: Context, error: BaseException | None) -> str:
    code = context.code()
    if code is None:
        if isinstance(error, asyncio.CancelledError):
            return "CANCELLED"  # the client went away (an agent closing its Attach)
        return "OK" if error is None else "UNKNOWN"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
