"""EEMI calls by their spec names, packed as Linux's zynqmp_pm_invoke_fn packs
them. A non-zero status raises :class:`EemiError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from mediator_client.calls import Call, Regs
from mediator_client.errors import EemiError
from mediatord.core.eemi import (
    CAP_ACCESS,
    CAP_CONTEXT,
    CAP_WAKEUP,
    NODE_APU,
    PM_SIP_SVC,
    PmApi,
    PmNode,
    PmStatus,
)

__all__ = [
    "CAP_ACCESS",
    "CAP_CONTEXT",
    "CAP_WAKEUP",
    "REQ_ACK_BLOCKING",
    "REQ_ACK_NO",
    "NodeStatus",
    "PmNode",
    "get_api_version",
    "get_chipid",
    "get_node_status",
    "pm_call",
    "release_node",
    "request_node",
    "reset_assert",
    "reset_get_status",
    "self_suspend",
    "set_requirement",
    "set_wakeup_source",
]

REQ_ACK_NO = 1
REQ_ACK_BLOCKING = 2
MAX_QOS = 100
T = TypeVar("T")


def _status(regs: Regs) -> int:
    return regs[0] & 0xFFFF_FFFF


def _pack(*args: int) -> tuple[int, ...]:
    a = (*args, 0, 0, 0, 0)
    return (a[1] << 32 | a[0], a[3] << 32 | a[2])


def pm_call(api: PmApi | int, *args: int, read: Callable[[Regs], T]) -> Call[T]:
    """Any EEMI call: ``read`` turns a successful answer into the result."""
    name = api.name if isinstance(api, PmApi) else f"{int(api):#x}"

    def decode(regs: Regs) -> T:
        status = _status(regs)
        if status != PmStatus.SUCCESS:
            known: PmStatus | int = (
                PmStatus(status) if status in PmStatus._value2member_map_ else status
            )
            raise EemiError(name, known)
        return read(regs)

    return Call(f"PM_{name}", PM_SIP_SVC | int(api), _pack(*args), decode, _detail(api, args))


# Where the node argument is, for printing it by name.
_NODE_AT: Final[dict[int, int]] = {PmApi.SET_WAKEUP_SOURCE: 1}
_NODE_APIS: Final = frozenset(
    {
        PmApi.REQ_NODE,
        PmApi.RELEASE_NODE,
        PmApi.SET_REQUIREMENT,
        PmApi.GET_NODE_STATUS,
        PmApi.SET_MAX_LATENCY,
        PmApi.SET_WAKEUP_SOURCE,
        PmApi.REQ_WAKEUP,
        PmApi.REQ_SUSPEND,
        PmApi.FORCE_POWERDOWN,
    }
)


def _detail(api: PmApi | int, args: tuple[int, ...]) -> str:
    at = _NODE_AT.get(int(api), 0) if api in _NODE_APIS else -1
    parts = []
    for index, value in enumerate(args):
        if index == at and value in PmNode._value2member_map_:
            parts.append(PmNode(value).name)
        else:
            parts.append(f"{value:#x}")
    return ", ".join(parts)


def _nothing(regs: Regs) -> None:
    return None


def get_api_version() -> Call[int]:
    return pm_call(PmApi.GET_API_VERSION, read=lambda regs: regs[0] >> 32)


def get_chipid() -> Call[tuple[int, int]]:
    return pm_call(PmApi.GET_CHIPID, read=lambda regs: (regs[0] >> 32, regs[1] & 0xFFFF_FFFF))


def request_node(
    node: int, capabilities: int = CAP_ACCESS, qos: int = MAX_QOS, ack: int = REQ_ACK_BLOCKING
) -> Call[None]:
    return pm_call(PmApi.REQ_NODE, node, capabilities, qos, ack, read=_nothing)


def release_node(node: int) -> Call[None]:
    return pm_call(PmApi.RELEASE_NODE, node, read=_nothing)


def set_requirement(
    node: int, capabilities: int, qos: int = MAX_QOS, ack: int = REQ_ACK_NO
) -> Call[None]:
    return pm_call(PmApi.SET_REQUIREMENT, node, capabilities, qos, ack, read=_nothing)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    power: int  # 1 on, 0 off (slaves); PU states for processors
    requirements: int  # the caller's capabilities
    usage: int  # how many masters hold a requirement


def get_node_status(node: int) -> Call[NodeStatus]:
    return pm_call(
        PmApi.GET_NODE_STATUS,
        node,
        read=lambda regs: NodeStatus(regs[0] >> 32, regs[1] & 0xFFFF_FFFF, regs[1] >> 32),
    )


def set_wakeup_source(node: int, enable: bool = True, target: int = NODE_APU) -> Call[None]:
    return pm_call(PmApi.SET_WAKEUP_SOURCE, target, node, int(enable), read=_nothing)


def reset_assert(reset: int, action: int) -> Call[None]:
    return pm_call(PmApi.RESET_ASSERT, reset, action, read=_nothing)


def reset_get_status(reset: int) -> Call[bool]:
    return pm_call(PmApi.RESET_GET_STATUS, reset, read=lambda regs: bool(regs[0] >> 32))


def self_suspend(node: int, latency: int = 0xFFFF_FFFF, state: int = 0) -> Call[None]:
    return pm_call(PmApi.SELF_SUSPEND, node, latency, state, read=_nothing)
