"""Wrapping a grpc.aio RPC handler: the one place that knows the handler shapes.

An interceptor sees a handler, not the call; to act on the call (its context,
its outcome) it returns a handler of the same shape that runs code around the
original one (mediatord has one such layer, :mod:`mediatord.server.gate`).
``wrap`` builds that handler from two functions: one around a unary response,
one around a response stream. Each is bound to the original behaviour with
``functools.partial`` rather than called from a closure: a closure would be one
more coroutine per call, and one more async generator every stream message
passes through (grpc.aio still sees a coroutine / async generator function:
``inspect`` unwraps partials).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

# (the original behaviour, the request, the context)
AroundUnary = Callable[[Any, Any, "Context"], Awaitable[Any]]
AroundStream = Callable[[Any, Any, "Context"], AsyncIterator[Any]]


def wrap(handler: Handler, around_unary: AroundUnary, around_stream: AroundStream) -> Handler:
    """A handler of ``handler``'s shape whose calls go through the two arounds."""
    # The aio handlers are coroutines / async generators; the stubs type them sync.
    behaviour: Any = (
        handler.stream_stream
        if handler.request_streaming and handler.response_streaming
        else handler.stream_unary
        if handler.request_streaming
        else handler.unary_stream
        if handler.response_streaming
        else handler.unary_unary
    )

    unary = functools.partial(around_unary, behaviour)
    # grpc.aio tells streaming handlers by inspect.isasyncgenfunction.
    streaming: functools.partial[Any] = functools.partial(around_stream, behaviour)
    assert inspect.isasyncgenfunction(streaming), around_stream

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.response_streaming and not inspect.isasyncgenfunction(behaviour):
        # A coroutine that sends with context.write (grpc_health's Watch): grpc.aio
        # awaits it, so it is wrapped like a unary behaviour; an async generator
        # around it would iterate a coroutine.
        streaming = unary
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)


class WrapperCache:
    """Wrapped handlers by method: built once, not on every call (a handler and its
    closures per RPC cost as much as the mediator's own work on the call)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, inner: Handler, build: Callable[[str, Handler], Handler]) -> Handler:
        """``inner`` wrapped by ``build(method, inner)``, built on the method's first
        call (and again only if its handler changes)."""
        cached = self._cache.get(method)
        if cached is not None and cached[0] is inner:
            return cached[1]
        wrapped = build(method, inner)
        self._cache[method] = (inner, wrapped)
        return wrapped
