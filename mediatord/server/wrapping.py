"""Wrapping a grpc.aio RPC handler: the one place that knows the handler shapes.

An interceptor sees a handler, not the call; to act on the call (its context,
its outcome) it returns a handler of the same shape that runs code around the
original one. ``wrap`` builds that handler from two functions: one around a
unary response, one around a response stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

AroundUnary = Callable[["Context", Callable[[], Awaitable[Any]]], Awaitable[Any]]
AroundStream = Callable[["Context", Callable[[], AsyncIterator[Any]]], AsyncIterator[Any]]


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

    async def unary(request: Any, context: Context) -> Any:
        return await around_unary(context, lambda: behaviour(request, context))

    # grpc.aio tells streaming handlers by inspect.isasyncgenfunction: these must
    # be async generator functions themselves.
    async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
        async for response in around_stream(context, lambda: behaviour(request, context)):
            yield response

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
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

    def get(self, method: str, inner: Handler, build: Callable[[], Handler]) -> Handler:
        cached = self._cache.get(method)
        if cached is not None and cached[0] is inner:
            return cached[1]
        wrapped = build()
        self._cache[method] = (inner, wrapped)
        return wrapped
