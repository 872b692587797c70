"""``mediator-agent``: one domain's guest agent on the command line.

Every command sends the exact SMCs a guest kernel's PSCI or EEMI driver would
(through :class:`~mediator_client.agent.AsyncGuestAgent`) and prints the answer:
human text by default, one JSON object per result or event with ``--json``.
Exit codes: 0 ok, 1 the mediator refused (a one-line message on stderr says what
to do), 2 usage error. The helpers above ``build_parser`` are shared with
``mediatorctl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc

from mediator_client import eemi, psci
from mediator_client.agent import AsyncGuestAgent, SuspendReport
from mediator_client.calls import Call, ClientTls, Event
from mediator_client.errors import (
    DomainGoneError,
    EemiError,
    MediatorError,
    NotPermittedError,
    NotRunningError,
    PsciError,
    RpcError,
    UnavailableError,
)
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core.eemi import (
    CAP_ACCESS,
    CAP_CONTEXT,
    CAP_UNUSABLE,
    CAP_WAKEUP,
    HWDOM_NODES,
    NODE_GRANT,
    NODES,
    PM_SIP_SVC,
    PM_SIP_SVC_32,
    RESET_GRANT,
    RESETS,
    PmApi,
    PmStatus,
)
from mediatord.core.psci import PsciFn, PsciRet
from mediatord.core.smccc import (
    MASK32,
    MASK64,
    SMCCC_ARCH_FEATURES,
    SMCCC_ARCH_SOC_ID,
    SMCCC_VERSION,
    SmcccRet,
    to_signed,
)

T = TypeVar("T")

DEFAULT_TARGET: Final = "127.0.0.1:50051"
TARGET_ENV: Final = "MEDIATOR_TARGET"
EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1  # 2, a usage error, is argparse's own exit
PROG: Final = "mediator-agent"

SMCCC_NAMES: Final = {
    SMCCC_VERSION: "SMCCC_VERSION",
    SMCCC_ARCH_FEATURES: "SMCCC_ARCH_FEATURES",
    SMCCC_ARCH_SOC_ID: "SMCCC_ARCH_SOC_ID",
}
CAPS: Final = {
    "ACCESS": CAP_ACCESS,
    "CONTEXT": CAP_CONTEXT,
    "WAKEUP": CAP_WAKEUP,
    "UNUSABLE": CAP_UNUSABLE,
}
RESET_ACTIONS: Final = {"RELEASE": 0, "ASSERT": 1, "PULSE": 2}
RESET_NAMES: Final = {number: f"RESET_{name}" for name, number in RESETS.items()}

# ------------------------------------------------------------- shared helpers


def number(text: str) -> int:
    """An unsigned 64-bit value: decimal, 0x.., 0o.. or 0b.. (argparse type)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use e.g. 42 or 0x2a)") from None
    if not 0 <= value <= MASK64:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit in a 64-bit register")
    return value


def count(text: str) -> int:
    value = number(text)
    if value > MASK32:
        raise argparse.ArgumentTypeError(f"{text!r} is too large")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def default_target() -> str:
    return os.environ.get(TARGET_ENV) or DEFAULT_TARGET


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        metavar="ADDR",
        default=default_target(),
        help=f"the daemon: HOST:PORT or unix:PATH (default: ${TARGET_ENV}, else {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per result or event on stdout, for scripts",
    )
    parser.add_argument(
        "--certs",
        metavar="DIR",
        type=Path,
        help="connect with mTLS, with the files `mediatorctl certs init DIR` wrote: ca.pem and "
        "the caller's <kind>-<name>.pem/.key (docs/security.md)",
    )


def client_tls(certs: Path | None, principal: str) -> ClientTls | None:
    """The mTLS identity for ``principal`` (``domain/x`` or ``operator/y``) from a
    ``certs init`` directory; None for a development listener."""
    if certs is None:
        return None
    kind, _, name = principal.partition("/")
    try:
        return ClientTls.from_dir(certs, f"{kind}-{name}")
    except OSError as error:
        raise CertificatesError(
            f"cannot read the {principal} certificate in {certs}: {error.strerror} "
            f"({error.filename}); make them with `mediatorctl certs init {certs}`"
        ) from None


class CertificatesError(MediatorError):
    """The --certs directory lacks the caller's certificate."""


def hexes(values: Sequence[int]) -> list[str]:
    return [f"{v:#x}" for v in values]


def jsonable(value: Any) -> Any:
    """Dataclasses, enums and tuples as JSON values (enums by name)."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class Output:
    """Human text or JSON lines on stdout; refusals as one line on stderr."""

    def __init__(self, as_json: bool, prog: str) -> None:
        self.json = as_json
        self.prog = prog

    def emit(self, human: str, data: Mapping[str, Any]) -> None:
        if self.json:
            print(json.dumps(jsonable(data)), flush=True)
        else:
            print(human, flush=True)

    def refused(self, message: str, data: Mapping[str, Any]) -> int:
        if self.json:
            print(json.dumps(jsonable({"ok": False, "message": message, **data})), flush=True)
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)
        return EXIT_REFUSED


@dataclass
class Situation:
    """What a refusal message may mention: who asked, where, about what."""

    target: str
    domain: str | None = None
    node: int | None = None
    reset: int | None = None


PSCI_HINTS: Final = {
    PsciRet.NOT_SUPPORTED: "the mediator does not implement that function (docs/psci.md)",
    PsciRet.INVALID_PARAMETERS: "no vCPU has that MPIDR or an argument is out of range; "
    "vCPU n has MPIDR (n // 16) << 8 | n % 16: check `mediatorctl show {domain}`",
    PsciRet.DENIED: "not in this state: SYSTEM_SUSPEND needs every other vCPU off "
    "(`mediator-agent --domain {domain} psci cpu-off --vcpu N`), CPU_OFF of the last vCPU "
    "that is on is refused; see `mediatorctl show {domain}`",
    PsciRet.ALREADY_ON: "that vCPU is already on: see `mediatorctl show {domain}`",
    PsciRet.ON_PENDING: "that vCPU is already being turned on",
    PsciRet.INTERNAL_FAILURE: "the host could not do it: see `mediatorctl timeline` "
    "and the daemon's log",
    PsciRet.INVALID_ADDRESS: "the entry point must lie in the domain's RAM (and be 4-byte "
    "aligned for AArch64): check `mediatorctl show {domain}`",
}


def _eemi_hint(error: EemiError, where: Situation) -> str:
    domain = where.domain or "the domain"
    if error.status == PmStatus.NO_ACCESS:
        if where.node is not None:
            node = node_name(where.node)
            device = NODE_GRANT.get(where.node)
            if device is not None:
                return (
                    f"{node} comes with device {device}, which is not assigned to {domain}: "
                    f"see `mediatorctl system` for its owner; an operator can "
                    f"`mediatorctl release OWNER {device}` then "
                    f"`mediatorctl assign {domain} {device}`"
                )
            if where.node in HWDOM_NODES:
                return f"only the hardware domain may use {node}"
            return f"no domain may use {node} (docs/eemi-access.md)"
        if where.reset is not None:
            grant = RESET_GRANT.get(where.reset)
            line = RESET_NAMES.get(where.reset, str(where.reset))
            if grant is None:
                return f"no domain may drive {line} (docs/eemi-access.md)"
            if grant == "hwdom":
                return f"only the hardware domain may drive {line}"
            return f"{line} comes with device {grant}, which is not assigned to {domain}"
        return f"{domain} does not hold what the call names (docs/eemi-access.md)"
    hints = {
        PmStatus.INVALID_NODE: "no such node: use a name such as UART_1 or a number",
        PmStatus.INVALID_PARAM: "an argument is out of range (docs/eemi-access.md)",
        PmStatus.ARGS: "an argument is out of range (docs/eemi-access.md)",
        PmStatus.DOUBLE_REQ: "the domain already holds that node: use `eemi set-requirement`",
        PmStatus.NOTSUPPORTED: "the firmware does not implement that call",
    }
    status = error.status
    if isinstance(status, PmStatus) and status in hints:
        return hints[status]
    return "see docs/eemi-access.md"


def explain(error: MediatorError, where: Situation) -> str:
    """One line: what was refused and what to do about it."""
    domain = where.domain
    named = f"domain {domain!r}" if domain else "that domain"
    if isinstance(error, DomainGoneError):
        if "destroyed" in error.details:
            return f"{named} was destroyed: check `mediatorctl list`"
        return f"{named} does not exist: check `mediatorctl list`"
    if isinstance(error, UnavailableError):
        return (
            f"cannot reach mediatord at {where.target} ({error.details or 'unavailable'}): "
            f"start it with `mediatord serve`, or point --target (or ${TARGET_ENV}) at it "
            "(a TLS listener also needs --certs DIR)"
        )
    if isinstance(error, NotPermittedError):
        return f"not permitted: {error.details}: check --domain and --principal (docs/security.md)"
    if isinstance(error, NotRunningError):
        return f"{error.details}: check `mediatorctl show {domain or 'DOMAIN'}`"
    if isinstance(error, PsciError):
        hint = PSCI_HINTS.get(error.code) if isinstance(error.code, PsciRet) else None
        text = f"{error}: {hint}" if hint else str(error)
        return text.format(domain=domain or "DOMAIN")
    if isinstance(error, EemiError):
        return f"{error}: {_eemi_hint(error, where)}"
    if isinstance(error, RpcError):
        hint = ""
        if error.code == grpc.StatusCode.ABORTED:
            hint = ": another agent (a newer `watch` or `suspend`) attached to the domain"
        elif error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            hint = (
                ": a standby CPU_SUSPEND waits for an interrupt "
                f"(`mediatorctl irq 27 --domain {domain or 'DOMAIN'} --vcpu N`)"
            )
        return f"{error.code.name}: {error.details}{hint}"
    return str(error)


def error_fields(error: MediatorError) -> dict[str, Any]:
    """The refusal as JSON fields (alongside ``message``)."""
    fields: dict[str, Any] = {"error": type(error).__name__}
    if isinstance(error, PsciError):
        fields |= {"function": error.function, "code": error.code, "value": int(error.code)}
    elif isinstance(error, EemiError):
        fields |= {"api": f"PM_{error.api}", "status": error.status, "value": int(error.status)}
    elif isinstance(error, RpcError):
        fields |= {"grpc_code": error.code.name, "details": error.details}
    return fields


def refusal(out: Output, error: MediatorError, where: Situation) -> int:
    return out.refused(explain(error, where), error_fields(error))


# ---------------------------------------------------------------- arguments


def node_number(text: str) -> int:
    """An EEMI node: UART_1, NODE_UART_1 (any case) or a number."""
    name = text.strip().upper().removeprefix("NODE_")
    if name in NODES:
        return NODES[name]
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"unknown node {text!r}: use a name such as UART_1 (NODE_UART_1) or a number"
        ) from None


def node_name(node: int) -> str:
    for name, value in NODES.items():
        if value == node:
            return f"NODE_{name}"
    return f"node {node}"


def capabilities(text: str) -> int:
    """EEMI capabilities: ACCESS|WAKEUP, access,context, none, or a number."""
    words = [w for w in text.upper().replace("|", ",").replace("+", ",").split(",") if w]
    if words == ["NONE"]:
        return 0
    if words and all(w.removeprefix("CAP_") in CAPS for w in words):
        value = 0
        for word in words:
            value |= CAPS[word.removeprefix("CAP_")]
        return value
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"bad capabilities {text!r}: use ACCESS, CONTEXT, WAKEUP, UNUSABLE joined by | "
            "or ',', none, or a number"
        ) from None


def caps_text(value: int) -> str:
    names = [name for name, bit in CAPS.items() if value & bit]
    rest = value & ~sum(CAPS.values())
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "none"


def reset_number(text: str) -> int:
    """A reset line: UART1, RESET_UART1 (any case) or a number (1000..1119)."""
    name = text.strip().upper().removeprefix("RESET_")
    if name in RESETS:
        return RESETS[name]
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"unknown reset line {text!r}: use a name such as UART1 (RESET_UART1) or a number"
        ) from None


def reset_action(text: str) -> int:
    name = text.strip().upper()
    if name in RESET_ACTIONS:
        return RESET_ACTIONS[name]
    if name in ("0", "1", "2"):
        return int(name)
    raise argparse.ArgumentTypeError(f"bad reset action {text!r}: release, assert or pulse")


def function_id(text: str) -> int:
    """A function ID: a number or a name (PSCI_VERSION, SYSTEM_SUSPEND_64, SMCCC_VERSION...)."""
    name = text.strip().upper()
    if name in PsciFn.__members__:
        return int(PsciFn[name])
    for value, smccc in SMCCC_NAMES.items():
        if smccc == name:
            return value
    try:
        value = number(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"unknown function {text!r}: use a number (0x84000000) or a PSCI name"
        ) from None
    if value > MASK32:
        raise argparse.ArgumentTypeError(f"a function ID is 32 bits, got {text!r}")
    return value


def function_name(fid: int) -> str:
    if fid in PsciFn._value2member_map_:
        return PsciFn(fid).name
    if fid in SMCCC_NAMES:
        return SMCCC_NAMES[fid]
    if fid & 0xFFFF_0000 in (PM_SIP_SVC, PM_SIP_SVC_32):
        api = fid & 0xFFFF
        if api in PmApi._value2member_map_:
            return f"PM_{PmApi(api).name}"
    return f"{fid:#010x}"


def meaning(fid: int, regs: Sequence[int]) -> str:
    """What x0 says, when it is something known."""
    x0 = regs[0]
    if fid & 0xFFFF_0000 in (PM_SIP_SVC, PM_SIP_SVC_32):
        status = x0 & MASK32
        if status in PmStatus._value2member_map_:
            return f"{PmStatus(status).name} ({status})"
        return f"status {status}"
    signed = to_signed(x0)
    if fid in (PsciFn.PSCI_VERSION, SMCCC_VERSION) and signed >= 0:
        kind = "PSCI" if fid == PsciFn.PSCI_VERSION else "SMCCC"
        return f"{kind} {signed >> 16}.{signed & 0xFFFF}"
    if signed < 0:
        if signed in PsciRet._value2member_map_:
            return PsciRet(signed).name
        if signed in SmcccRet._value2member_map_:
            return SmcccRet(signed).name
        return str(signed)
    if signed == 0:
        return "SUCCESS"
    return ""


def mpidr_vcpu(mpidr: int) -> int:
    return (mpidr >> 8 & 0xFF) * 16 + (mpidr & 0xFF)


def event_fields(event: Event) -> dict[str, Any]:
    kind = event.kind
    return {
        "seq": event.seq,
        "vcpu": event.vcpu,
        "kind": type(kind).__name__.lower(),
        **asdict(kind),
    }


# --------------------------------------------------------------- the parser

DESCRIPTION = """\
mediator-agent: one domain's guest agent. Sends the raw PSCI and EEMI SMCs a guest
kernel would, for one vCPU of --domain, and prints the mediator's answer; follows the
domain's vCPU events; suspends the domain to RAM as Linux does.
"""

EPILOG = f"""\
numbers accept 0x.. (hex), 0o.., 0b.. and decimal. EEMI nodes accept UART_1,
NODE_UART_1 or a number.
exit codes: 0 ok, 1 the mediator refused (the message says what to do), 2 usage error.
The daemon is --target, else ${TARGET_ENV}, else {DEFAULT_TARGET}. See docs/cli.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--domain", metavar="NAME", required=True, help="the domain the agent acts for"
    )
    common_args(parser)
    parser.add_argument(
        "--principal",
        metavar="P",
        help="state the caller explicitly: domain/<name> or operator/<name> (docs/security.md)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    vcpu = argparse.ArgumentParser(add_help=False)
    vcpu.add_argument(
        "--vcpu", metavar="N", type=count, default=0, help="the calling vCPU (default 0)"
    )

    call = commands.add_parser(
        "call",
        parents=[vcpu],
        help="send one raw SMC and print x0..x3",
        description="Send one raw SMC (function ID and x1..) and print x0..x3 in hex, x0 "
        "decoded as a PSCI / SMCCC return code or EEMI status when it is one.",
    )
    call.add_argument("fid", metavar="FID", type=function_id, help="function ID (or PSCI name)")
    call.add_argument("args", metavar="ARGS", type=number, nargs="*", help="x1, x2, ...")
    call.add_argument("--hvc", action="store_true", help="record the HVC conduit (default SMC)")

    _psci_commands(commands, vcpu)
    _eemi_commands(commands, vcpu)

    suspend = commands.add_parser(
        "suspend",
        help="suspend the domain to RAM as Linux does, and wait for its resume",
        description="What `echo mem > /sys/power/state` does: power down the --device nodes "
        "the domain holds (--wake nodes keep only WAKEUP), CPU_OFF every secondary vCPU "
        "from itself, "
        "SYSTEM_SUSPEND from vCPU 0; then wait for the RESUME a wake interrupt brings, "
        "CPU_ON the secondaries again and restore the devices. For the hardware domain "
        "this suspends the host.",
    )
    suspend.add_argument(
        "--entry", metavar="ADDR", type=number, required=True, help="where vCPU 0 resumes"
    )
    suspend.add_argument(
        "--context-id", metavar="X", type=number, default=0, help="x0 at the resume"
    )
    suspend.add_argument(
        "--secondary-entry",
        metavar="ADDR",
        type=number,
        help="where the secondaries start again (default: --entry)",
    )
    suspend.add_argument(
        "--device",
        metavar="NODE",
        type=node_number,
        action="append",
        default=[],
        help="a node the domain holds, powered down over the suspend (repeatable)",
    )
    suspend.add_argument(
        "--wake",
        metavar="NODE",
        type=node_number,
        action="append",
        default=[],
        help="a node the domain holds that stays a wake source: it keeps only WAKEUP over "
        "the suspend, so its interrupt can resume the domain (repeatable)",
    )
    suspend.add_argument(
        "--timeout",
        metavar="S",
        type=seconds,
        help="give up (exit 1) when no resume comes within S seconds (default: wait)",
    )

    watch = commands.add_parser(
        "watch",
        help="follow the domain's vCPU events (Attach)",
        description="Follow the domain's Attach stream and print each vCPU event. Attach "
        "hands out the events no agent has received yet (the first is vCPU 0's boot START "
        "if nothing attached before), then new ones; a newer Attach for the domain takes "
        "the stream over.",
    )
    watch.add_argument("--count", metavar="N", type=count, help="stop after N events")
    watch.add_argument(
        "--after",
        metavar="SEQ",
        type=count,
        default=0,
        help="skip events up to seq SEQ (Attach delivers at least once: an event the "
        "previous agent received as it exited may come again)",
    )
    watch.add_argument(
        "--timeout",
        metavar="S",
        type=seconds,
        help="stop after S seconds (exit 1 if --count events did not all come)",
    )
    return parser


def _psci_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    vcpu: argparse.ArgumentParser,
) -> None:
    psci_parser = commands.add_parser(
        "psci",
        help="PSCI calls by name",
        description="PSCI 1.1 calls by their spec names (the SMC64 forms), from --vcpu.",
    )
    calls = psci_parser.add_subparsers(dest="psci", required=True, metavar="CALL")
    calls.add_parser("version", parents=[vcpu], help="PSCI_VERSION")
    features = calls.add_parser("features", parents=[vcpu], help="PSCI_FEATURES of a function ID")
    features.add_argument("fid", metavar="FID", type=function_id, help="number or PSCI name")
    cpu_on = calls.add_parser("cpu-on", parents=[vcpu], help="CPU_ON: start another vCPU")
    cpu_on.add_argument(
        "mpidr",
        metavar="MPIDR",
        type=number,
        help="the target vCPU's MPIDR: (n // 16) << 8 | n %% 16 for vCPU n",
    )
    cpu_on.add_argument("entry", metavar="ENTRY", type=number, help="entry point")
    cpu_on.add_argument(
        "context", metavar="CTX", type=number, nargs="?", default=0, help="context ID (x0)"
    )
    calls.add_parser("cpu-off", parents=[vcpu], help="CPU_OFF: --vcpu powers itself off")
    affinity = calls.add_parser(
        "affinity-info", parents=[vcpu], help="AFFINITY_INFO: is a vCPU on?"
    )
    affinity.add_argument("mpidr", metavar="MPIDR", type=number)
    affinity.add_argument("level", metavar="LEVEL", type=count, nargs="?", default=0)
    suspend = calls.add_parser(
        "system-suspend",
        parents=[vcpu],
        help="SYSTEM_SUSPEND only (no device or secondary handling; see `suspend`)",
    )
    suspend.add_argument("entry", metavar="ENTRY", type=number)
    suspend.add_argument("context", metavar="CTX", type=number, nargs="?", default=0)
    calls.add_parser("system-off", parents=[vcpu], help="SYSTEM_OFF (dom0: the host)")
    calls.add_parser("system-reset", parents=[vcpu], help="SYSTEM_RESET (dom0: every domain)")


def _eemi_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    vcpu: argparse.ArgumentParser,
) -> None:
    eemi_parser = commands.add_parser(
        "eemi",
        help="EEMI (ZynqMP power-management) calls by name",
        description="EEMI calls packed as Linux's zynqmp_pm_invoke_fn packs them. NODE is a "
        "name (UART_1 or NODE_UART_1) or a number; CAPS is ACCESS, CONTEXT, WAKEUP, "
        "UNUSABLE joined by | or ',', none, or a number.",
    )
    calls = eemi_parser.add_subparsers(dest="eemi", required=True, metavar="CALL")
    calls.add_parser("api-version", parents=[vcpu], help="PM_GET_API_VERSION")
    request = calls.add_parser("request-node", parents=[vcpu], help="PM_REQ_NODE")
    request.add_argument("node", metavar="NODE", type=node_number)
    request.add_argument("--caps", metavar="C", type=capabilities, default=CAP_ACCESS)
    request.add_argument("--qos", metavar="Q", type=count, default=eemi.MAX_QOS)
    release = calls.add_parser("release-node", parents=[vcpu], help="PM_RELEASE_NODE")
    release.add_argument("node", metavar="NODE", type=node_number)
    requirement = calls.add_parser("set-requirement", parents=[vcpu], help="PM_SET_REQUIREMENT")
    requirement.add_argument("node", metavar="NODE", type=node_number)
    requirement.add_argument("caps", metavar="CAPS", type=capabilities)
    status = calls.add_parser("node-status", parents=[vcpu], help="PM_GET_NODE_STATUS")
    status.add_argument("node", metavar="NODE", type=node_number)
    wakeup = calls.add_parser("wakeup-source", parents=[vcpu], help="PM_SET_WAKEUP_SOURCE")
    wakeup.add_argument("node", metavar="NODE", type=node_number)
    wakeup.add_argument("--disable", action="store_true", help="stop it waking the APU")
    reset = calls.add_parser("reset-assert", parents=[vcpu], help="PM_RESET_ASSERT")
    reset.add_argument("reset", metavar="RESET", type=reset_number, help="UART1 or 1035")
    reset.add_argument("action", metavar="ACTION", type=reset_action, help="release|assert|pulse")


# ------------------------------------------------------------------ commands


class Agent(AsyncGuestAgent):
    """An agent that says what it does while ``narrate`` is on (for ``suspend``): each
    power call as it succeeds, so a script can tell when the domain is suspended."""

    def __init__(self, *args: Any, say: Callable[[str, dict[str, Any]], None], **kw: Any):
        super().__init__(*args, **kw)
        self.say = say
        self.narrate = False

    async def call(
        self, call: Call[T], vcpu: int = 0, conduit: pb.Conduit.ValueType = pb.CONDUIT_SMC
    ) -> T:
        result = await super().call(call, vcpu, conduit)
        if self.narrate:
            self._narrate(call, vcpu)
        return result

    def _narrate(self, call: Call[Any], vcpu: int) -> None:
        name, args, domain = call.name, call.args, self.domain
        if name == "CPU_OFF":
            self.say(f"{domain}: vCPU {vcpu} off (CPU_OFF)", {"step": "cpu_off", "vcpu": vcpu})
        elif name == "CPU_ON":
            target, entry = mpidr_vcpu(args[0]), args[1]
            self.say(
                f"{domain}: vCPU {target} back on at {entry:#x} (CPU_ON)",
                {"step": "cpu_on", "vcpu": target, "entry_point": entry},
            )
        elif name == "SYSTEM_SUSPEND":
            entry, context = args[0], args[1]
            self.say(
                f"{domain}: suspended (SYSTEM_SUSPEND from vCPU {vcpu}, resumes at {entry:#x} "
                f"with x0 = {context:#x}); waiting for a wake interrupt",
                {"step": "suspended", "vcpu": vcpu, "entry_point": entry, "context_id": context},
            )
        elif name == "PM_SET_REQUIREMENT":
            node, caps = args[0] & MASK32, args[0] >> 32
            self.say(
                f"{domain}: {node_name(node)} requirements now {caps_text(caps)}",
                {"step": "set_requirement", "node": node, "caps": caps},
            )


class Command:
    """Runs one parsed command against one agent."""

    def __init__(self, args: argparse.Namespace, out: Output, where: Situation) -> None:
        self.args = args
        self.out = out
        self.where = where
        self.domain: str = args.domain

    def result(self, human: str, **data: Any) -> int:
        self.out.emit(human, {"domain": self.domain, **data})
        return EXIT_OK

    async def run(self) -> int:
        args = self.args
        # On TLS the certificate says who calls: the --principal's, else the domain's own.
        tls = client_tls(args.certs, args.principal or f"domain/{args.domain}")
        agent = Agent(
            args.target, args.domain, principal=args.principal, say=self.result_line, tls=tls
        )
        async with agent:
            if args.command == "call":
                return await self.raw(agent)
            if args.command == "psci":
                return await self.psci(agent)
            if args.command == "eemi":
                return await self.eemi(agent)
            if args.command == "suspend":
                return await self.suspend(agent)
            return await self.watch(agent)

    def result_line(self, human: str, data: dict[str, Any]) -> None:
        self.out.emit(human, {"domain": self.domain, **data})

    async def raw(self, agent: Agent) -> int:
        args = self.args
        conduit = pb.CONDUIT_HVC if args.hvc else pb.CONDUIT_SMC
        regs = await agent.raw(args.fid, *args.args, vcpu=args.vcpu, conduit=conduit)
        name = function_name(args.fid)
        said = meaning(args.fid, regs)
        shown = ", ".join(hexes(args.args))
        lines = [f"{name}({shown}) from vCPU {args.vcpu}:"]
        for index, reg in enumerate(regs):
            note = f"  {said}" if index == 0 and said else ""
            lines.append(f"  x{index} = {reg:#018x}{note}")
        return self.result(
            "\n".join(lines),
            function_id=args.fid,
            function=name,
            vcpu=args.vcpu,
            args=args.args,
            regs=list(regs),
            meaning=said,
        )

    async def psci(self, agent: Agent) -> int:
        args = self.args
        vcpu: int = args.vcpu
        which: str = args.psci
        if which == "version":
            version = await agent.call(psci.psci_version(), vcpu)
            return self.result(
                f"PSCI {version}", call="PSCI_VERSION", major=version.major, minor=version.minor
            )
        if which == "features":
            flags = await agent.call(psci.psci_features(args.fid), vcpu)
            name = function_name(args.fid)
            return self.result(
                f"PSCI_FEATURES({name} = {args.fid:#x}): supported, flags {flags:#x}",
                call="PSCI_FEATURES",
                function_id=args.fid,
                function=name,
                supported=True,
                flags=flags,
            )
        if which == "cpu-on":
            await agent.call(psci.cpu_on(args.mpidr, args.entry, args.context), vcpu)
            target = mpidr_vcpu(args.mpidr)
            return self.result(
                f"CPU_ON(MPIDR {args.mpidr:#x}, entry {args.entry:#x}, context {args.context:#x})"
                f" from vCPU {vcpu}: SUCCESS; vCPU {target} starts (its START is on `watch`)",
                call="CPU_ON",
                vcpu=vcpu,
                mpidr=args.mpidr,
                entry_point=args.entry,
                context_id=args.context,
                result="SUCCESS",
            )
        if which == "cpu-off":
            await agent.call(psci.cpu_off(), vcpu)
            return self.result(
                f"CPU_OFF from vCPU {vcpu}: SUCCESS; vCPU {vcpu} is off",
                call="CPU_OFF",
                vcpu=vcpu,
                result="SUCCESS",
            )
        if which == "affinity-info":
            state = await agent.call(psci.affinity_info(args.mpidr, args.level), vcpu)
            return self.result(
                f"AFFINITY_INFO(MPIDR {args.mpidr:#x}, level {args.level}): {state.name}",
                call="AFFINITY_INFO",
                mpidr=args.mpidr,
                level=args.level,
                state=state,
            )
        if which == "system-suspend":
            await agent.call(psci.system_suspend(args.entry, args.context), vcpu)
            return self.result(
                f"SYSTEM_SUSPEND(entry {args.entry:#x}, context {args.context:#x}) from vCPU "
                f"{vcpu}: SUCCESS; {self.domain} is suspended until a wake interrupt",
                call="SYSTEM_SUSPEND",
                vcpu=vcpu,
                entry_point=args.entry,
                context_id=args.context,
                result="SUCCESS",
            )
        if which == "system-off":
            await agent.call(psci.system_off(), vcpu)
            return self.result(
                f"SYSTEM_OFF from vCPU {vcpu}: SUCCESS; {self.domain} is shut down",
                call="SYSTEM_OFF",
                vcpu=vcpu,
                result="SUCCESS",
            )
        await agent.call(psci.system_reset(), vcpu)
        return self.result(
            f"SYSTEM_RESET from vCPU {vcpu}: SUCCESS; {self.domain} reboots",
            call="SYSTEM_RESET",
            vcpu=vcpu,
            result="SUCCESS",
        )

    async def eemi(self, agent: Agent) -> int:
        args = self.args
        vcpu: int = args.vcpu
        which: str = args.eemi
        node: int | None = getattr(args, "node", None)
        self.where.node = node
        if which == "api-version":
            version = await agent.call(eemi.get_api_version(), vcpu)
            return self.result(
                f"EEMI API version {version >> 16}.{version & 0xFFFF}",
                call="PM_GET_API_VERSION",
                version=version,
                major=version >> 16,
                minor=version & 0xFFFF,
            )
        if which == "reset-assert":
            self.where.reset = args.reset
            await agent.call(eemi.reset_assert(args.reset, args.action), vcpu)
            line = RESET_NAMES.get(args.reset, str(args.reset))
            action = next(k for k, v in RESET_ACTIONS.items() if v == args.action)
            return self.result(
                f"PM_RESET_ASSERT({line} = {args.reset}, {action}): SUCCESS",
                call="PM_RESET_ASSERT",
                reset=args.reset,
                reset_name=line,
                action=action,
                status="SUCCESS",
            )
        assert node is not None
        name = node_name(node)
        if which == "node-status":
            status = await agent.call(eemi.get_node_status(node), vcpu)
            return self.result(
                f"{name}: power {status.power} ({'on' if status.power else 'off'}), "
                f"requirements {caps_text(status.requirements)}, usage {status.usage}",
                call="PM_GET_NODE_STATUS",
                node=node,
                node_name=name,
                power=status.power,
                requirements=status.requirements,
                usage=status.usage,
            )
        if which == "request-node":
            await agent.call(eemi.request_node(node, args.caps, args.qos), vcpu)
            shown = f"{name}, caps {caps_text(args.caps)}, qos {args.qos}"
            extra: dict[str, Any] = {"caps": args.caps, "qos": args.qos}
            api = "PM_REQ_NODE"
        elif which == "release-node":
            await agent.call(eemi.release_node(node), vcpu)
            shown, extra, api = name, {}, "PM_RELEASE_NODE"
        elif which == "set-requirement":
            await agent.call(eemi.set_requirement(node, args.caps), vcpu)
            shown = f"{name}, caps {caps_text(args.caps)}"
            extra, api = {"caps": args.caps}, "PM_SET_REQUIREMENT"
        else:
            enable = not args.disable
            await agent.call(eemi.set_wakeup_source(node, enable), vcpu)
            shown = f"{name}, {'enable' if enable else 'disable'}"
            extra, api = {"enable": enable}, "PM_SET_WAKEUP_SOURCE"
        return self.result(
            f"{api}({shown}): SUCCESS",
            call=api,
            node=node,
            node_name=name,
            status="SUCCESS",
            **extra,
        )

    async def suspend(self, agent: Agent) -> int:
        args = self.args
        for node in (*args.device, *args.wake):
            self.where.node = node
            held = await agent.call(eemi.get_node_status(node))
            if held.requirements:
                agent.held[node] = held.requirements
        agent.wake_nodes.update(args.wake)
        self.where.node = None
        agent.narrate = True
        began = time.monotonic()
        try:
            report: SuspendReport = await agent.suspend_to_ram(
                args.entry,
                args.context_id,
                secondary_entry=args.secondary_entry,
                resume_timeout=args.timeout,
            )
        except TimeoutError:
            return self.out.refused(
                f"{self.domain} is still suspended: no RESUME within {args.timeout} s; wake it "
                "with `mediatorctl irq LINE` (the IRQ of one of its devices, see "
                f"`mediatorctl show {self.domain}`)",
                {"error": "timeout", "domain": self.domain},
            )
        resumed = report.resumed_by
        assert resumed is not None
        took = report.resumed_at - report.suspended_at
        return self.result(
            f"{self.domain}: resumed by {resumed} after {took:.3f} s; secondaries back on: "
            f"{', '.join(map(str, report.secondaries_off)) or 'none'}; devices restored: "
            f"{', '.join(node_name(n) for n in report.devices_suspended) or 'none'}",
            step="resumed",
            resumed_by=event_fields(resumed),
            suspended_s=took,
            total_s=time.monotonic() - began,
            secondaries=report.secondaries_off,
            devices={node_name(n): c for n, c in report.devices_suspended.items()},
        )

    async def watch(self, agent: Agent) -> int:
        args = self.args
        # A quick call first: an unknown domain or an unreachable daemon fails at once
        # (Attach itself would retry an unreachable daemon for a while).
        await agent.call(psci.psci_version())
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        seen, last = 0, args.after
        while args.count is None or seen < args.count:
            within = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                event = await agent.wait_for(lambda e: True, after=last, within=within)
            except TimeoutError:
                if args.count is not None:
                    return self.out.refused(
                        f"only {seen} of {args.count} events of {self.domain} came within "
                        f"{args.timeout} s",
                        {"error": "timeout", "domain": self.domain, "events": seen},
                    )
                return EXIT_OK
            last = event.seq
            seen += 1
            self.result(str(event), event=event_fields(event))
        return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json, PROG)
    where = Situation(target=args.target, domain=args.domain)
    try:
        return asyncio.run(Command(args, out, where).run())
    except MediatorError as error:
        return refusal(out, error, where)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return quiet_exit()


def quiet_exit() -> int:
    """stdout went away (``| head``): no traceback, and no second error at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
