"""Typed errors: what the mediator refused, and how."""

from __future__ import annotations

import grpc

from mediatord.core.eemi import PmStatus
from mediatord.core.psci import PsciRet


class MediatorError(Exception):
    """Any refusal or failure talking to mediatord."""


class PsciError(MediatorError):
    """A PSCI call answered with an error code (x0 < 0)."""

    def __init__(self, function: str, code: PsciRet | int) -> None:
        self.function = function
        self.code = code
        name = code.name if isinstance(code, PsciRet) else str(code)
        super().__init__(f"{function} returned {name}")


class EemiError(MediatorError):
    """An EEMI call answered with a non-zero status (e.g. XST_PM_NO_ACCESS)."""

    def __init__(self, api: str, status: PmStatus | int) -> None:
        self.api = api
        self.status = status
        name = status.name if isinstance(status, PmStatus) else str(status)
        super().__init__(f"PM_{api} returned {name} ({int(status)})")


class RpcError(MediatorError):
    """The gRPC call itself was refused (identity, arguments, state)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class NotPermittedError(RpcError):
    """UNAUTHENTICATED or PERMISSION_DENIED."""


class NotRunningError(RpcError):
    """FAILED_PRECONDITION: the domain is not running or the vCPU is not on."""


class DomainGoneError(RpcError):
    """The agent's domain does not exist (any more)."""


class UnavailableError(RpcError):
    """The daemon cannot be reached."""


def from_rpc(error: grpc.RpcError) -> RpcError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code == grpc.StatusCode.UNAUTHENTICATED and "no domain named" in details:
        return DomainGoneError(code, details)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return NotPermittedError(code, details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if "was destroyed" in details:
            return DomainGoneError(code, details)
        return NotRunningError(code, details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(code, details)
    return RpcError(code, details)
