"""``mediatorctl``: the operator's command line for mediatord's Control service.

Tables for a terminal by default; ``--json`` prints one JSON object per result or
event: the protobuf messages with their proto field names, enum values by name and
64-bit integers as JSON numbers. Exit codes: 0 ok, 1 the mediator refused (a
one-line message on stderr says what to do), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mediator_client import timeline
from mediator_client.agent_cli import (
    EXIT_OK,
    Output,
    Situation,
    caps_text,
    client_tls,
    common_args,
    count,
    explain,
    number,
    quiet_exit,
    refusal,
    seconds,
)
from mediator_client.calls import Event
from mediator_client.errors import MediatorError, NotPermittedError, RpcError, UnavailableError
from mediator_client.operator import Operator
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core.eemi import PmApi, PmStatus
from mediatord.core.psci import PsciRet

POLICIES: Final = {
    "wait-all": pb.SUSPEND_POLICY_WAIT_ALL,
    "pause-stragglers": pb.SUSPEND_POLICY_PAUSE_STRAGGLERS,
    "force": pb.SUSPEND_POLICY_FORCE,
}

PROG: Final = "mediatorctl"
ON: Final = pb.VCPU_POWER_ON
OUTCOME_TEXT: Final = {
    pb.RaiseInterruptResponse.OUTCOME_DELIVERED: "delivered to {domain} vCPU {vcpu}",
    pb.RaiseInterruptResponse.OUTCOME_WOKE_VCPU: "woke {domain} vCPU {vcpu} from CPU_SUSPEND",
    pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN: "resumed {domain} (vCPU {vcpu})",
    pb.RaiseInterruptResponse.OUTCOME_PENDING: "kept for {domain}: {reason}",
    pb.RaiseInterruptResponse.OUTCOME_DROPPED: "{reason}",
    pb.RaiseInterruptResponse.OUTCOME_HOST_RESET: "the SoC had been reset (the watchdog fired "
    "in suspend): every domain rebooted",
}

# ------------------------------------------------------------ formatting


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON values: every field (oneof members only when set), enums by
    name, maps as objects, 64-bit integers as numbers (not strings, unlike json_format)."""
    out: dict[str, Any] = {}
    field: Any
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is not None and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        if _is_map(field):
            entry = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _scalar(entry, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        else:
            out[field.name] = _scalar(field, value)
    return out


def _is_map(field: Any) -> bool:
    """(Descriptors are Any here: the stubs type them as Optional everywhere.)"""
    return bool(
        field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
    )


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


def enum_name(prefix: str, name: str) -> str:
    """DOMAIN_STATE_RUNNING -> running."""
    return name.removeprefix(prefix).lower()


def state_name(state: int) -> str:
    return enum_name("DOMAIN_STATE_", pb.DomainState.Name(state))  # type: ignore[arg-type]


def power_name(power: int) -> str:
    return enum_name("VCPU_POWER_", pb.VcpuPower.Name(power))  # type: ignore[arg-type]


def host_name(state: int) -> str:
    return enum_name("HOST_STATE_", pb.HostState.Name(state))  # type: ignore[arg-type]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    cells = [list(headers), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(indent + line.rstrip() for line in lines)


def vcpus_on(domain: pb.DomainInfo) -> int:
    return sum(1 for v in domain.vcpus if v.power == ON)


def wake_text(device: pb.DeviceInfo) -> str:
    if device.wake_source:
        return "source"
    return "capable" if device.wake_capable else "-"


def requirements_text(device: pb.DeviceInfo) -> str:
    held = sorted(device.requirements.items())
    return ", ".join(f"{d}={caps_text(c)}" for d, c in held) or "-"


def device_rows(devices: Sequence[pb.DeviceInfo]) -> list[list[object]]:
    return [
        [
            d.name,
            d.node_id,
            d.irq,
            f"{d.mmio_base:#x}+{d.mmio_size:#x}",
            d.owner or "-",
            "yes" if d.powered else "no",
            wake_text(d),
            requirements_text(d),
        ]
        for d in devices
    ]


DEVICE_HEADERS: Final = ("DEVICE", "NODE", "IRQ", "MMIO", "OWNER", "POWERED", "WAKE", "HELD BY")


def timing_us(timing: pb.Timing) -> str:
    return f"{(timing.end_ns - timing.start_ns) / 1e3:.1f} us"


def secs(ns: int) -> str:
    return f"{ns / 1e9:.6f}"


def event_text(event: pb.SystemEvent) -> str:
    """The details of one SystemEvent, after its seq, time and kind."""
    kind = event.WhichOneof("kind")
    if kind == "vcpu_event":
        e = event.vcpu_event
        return f"{e.domain} {Event.from_proto(e.event)}"
    if kind == "vcpu_power":
        p = event.vcpu_power
        return f"{p.domain} vCPU {p.vcpu} {power_name(p.power)}"
    if kind == "domain_state":
        return f"{event.domain_state.domain} {state_name(event.domain_state.state)}"
    if kind == "host_state":
        return host_name(event.host_state)
    if kind == "host_step":
        s = event.host_step
        result = "ok" if s.result == 0 else f"failed ({_psci(s.result)})"
        injected = " injected" if s.injected else ""
        return f"{s.phase} {s.name} {(s.end_ns - s.start_ns) / 1e3:.1f} us {result}{injected}"
    if kind == "hardware_step":
        h = event.hardware_step
        result = "ok" if h.result == 0 else f"failed ({_psci(h.result)})"
        detail = f" {h.detail}" if h.detail else ""
        return f"{h.name}{detail} {(h.end_ns - h.start_ns) / 1e3:.1f} us {result}"
    if kind == "domain_created":
        return event.domain_created
    if kind == "domain_destroyed":
        return event.domain_destroyed
    if kind == "firmware_call":
        f = event.firmware_call
        api = f"PM_{PmApi(f.api).name}" if f.api in PmApi._value2member_map_ else f"api {f.api}"
        status = PmStatus(f.status).name if f.status in PmStatus._value2member_map_ else f.status
        return f"{f.domain} {api} {f.verdict} {status}"
    if kind == "device_owner":
        o = event.device_owner
        return f"{o.device} {'assigned to' if o.assigned else 'released from'} {o.domain}"
    return ""


def _psci(code: int) -> str:
    return PsciRet(code).name if code in PsciRet._value2member_map_ else str(code)


def psci_error(text: str) -> int:
    """A PSCI error code for InjectFault: DENIED, INTERNAL_FAILURE.., -3, or 0."""
    name = text.strip().upper()
    if name in PsciRet.__members__:
        return int(PsciRet[name])
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad error {text!r}: a PSCI error name (DENIED, INTERNAL_FAILURE..) or -1..-9"
        ) from None


# ----------------------------------------------------------------- parser

DESCRIPTION = """\
mediatorctl: the operator's view of mediatord. Lists domains, shows a domain or the
system, creates and destroys domains, assigns devices, raises interrupts, injects faults,
follows every state change and draws the last host suspend and resume.
"""

EPILOG = """\
exit codes: 0 ok, 1 the mediator refused (the message says what to do), 2 usage error.
See docs/cli.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common_args(parser)
    parser.add_argument(
        "--principal",
        metavar="NAME",
        help="call as operator/NAME: metadata on a development listener, the "
        "operator-NAME certificate with --certs (default: anonymous; with --certs, admin)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    certs = commands.add_parser(
        "certs",
        help="make the certificates of a TLS listener",
        description="certs init DIR: write a CA (ca.pem/.key), the server's certificate "
        "(server.pem/.key, for the --host names), one client certificate per "
        "domain of the board (domain-<name>.pem/.key) and per operator "
        "(operator-<name>.pem/.key). Keys are mode 0600. Needs no daemon.",
    )
    certs_commands = certs.add_subparsers(dest="certs", required=True, metavar="ACTION")
    init = certs_commands.add_parser("init", help="write a CA and every certificate into DIR")
    init.add_argument("directory", metavar="DIR", type=Path)
    init.add_argument(
        "--board",
        metavar="FILE",
        type=Path,
        help="the board whose domains get certificates (default: the embedded default board)",
    )
    init.add_argument(
        "--host",
        metavar="NAME",
        action="append",
        help="a DNS name or IP address the server certificate names, i.e. the address "
        "clients dial (repeatable; default: localhost, 127.0.0.1 and ::1)",
    )
    init.add_argument(
        "--operator",
        metavar="NAME",
        action="append",
        help="an operator to certify (repeatable; default: admin)",
    )
    state = commands.add_parser(
        "state",
        help="the daemon's whole state as one JSON document",
        description="state export: the system, every domain with its vCPUs (entry point, "
        "context ID), devices and owners, each domain's queued vCPU events and the "
        "journal's position, as JSON (docs/journal.md). `mediatord check-state DIR` prints "
        "the same from a stopped daemon's state directory.",
    )
    state_commands = state.add_subparsers(dest="state", required=True, metavar="ACTION")
    export = state_commands.add_parser("export", help="print (or --output) the JSON document")
    export.add_argument(
        "--output", metavar="FILE", type=Path, help="write it to FILE instead of stdout"
    )
    commands.add_parser("list", help="the domains: state, vCPUs on/total, devices")
    show = commands.add_parser("show", help="one domain: its vCPUs and devices")
    show.add_argument("domain", metavar="DOMAIN")
    commands.add_parser("system", help="host state, pCPUs, watchdog, devices")

    create = commands.add_parser("create", help="create a domain (vCPU 0 starts at its RAM base)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--vcpus", metavar="N", type=count, required=True)
    create.add_argument("--ram-base", metavar="A", type=number, required=True)
    create.add_argument("--ram-size", metavar="S", type=number, required=True)
    create.add_argument("--aarch32", action="store_true", help="an AArch32 domain")
    create.add_argument(
        "--device",
        metavar="D",
        action="append",
        default=[],
        help="an unassigned board device to give it (repeatable)",
    )
    destroy = commands.add_parser("destroy", help="destroy a domain")
    destroy.add_argument("name", metavar="NAME")
    assign = commands.add_parser("assign", help="assign an unassigned device to a domain")
    assign.add_argument("domain", metavar="DOMAIN")
    assign.add_argument("device", metavar="DEVICE")
    release = commands.add_parser("release", help="take a device back from a domain")
    release.add_argument("domain", metavar="DOMAIN")
    release.add_argument("device", metavar="DEVICE")

    irq = commands.add_parser(
        "irq",
        help="raise an interrupt (a device SPI, or the virtual timer 27 with --domain/--vcpu)",
    )
    irq.add_argument("line", metavar="LINE", type=count, help="GIC INTID, e.g. 54 (UART_1)")
    irq.add_argument("--domain", metavar="D", default="", help="for a PPI: the domain")
    irq.add_argument("--vcpu", metavar="N", type=count, default=0, help="for a PPI: the vCPU")

    fault = commands.add_parser(
        "fault", help="make a host step or hardware operation fail its next runs"
    )
    fault.add_argument("step", metavar="STEP", help="e.g. save_gic or el3.cpu_off")
    fault.add_argument(
        "--count", metavar="N", type=count, default=1, help="how many runs fail (0 clears)"
    )
    fault.add_argument(
        "--error",
        metavar="E",
        type=psci_error,
        default=0,
        help="PSCI error, e.g. DENIED or -3 (default: the operation's usual one)",
    )

    suspend = commands.add_parser(
        "suspend",
        help="coordinated system suspend: every domU, then the hardware domain and the host",
        description="Control.RequestSystemSuspend: every running domU gets SUSPEND_REQUEST "
        "and suspends itself (the agent library's default) or vetoes; then the hardware "
        "domain is asked and its SYSTEM_SUSPEND suspends the host. wait-all: a veto or the "
        "deadline aborts and the domUs that suspended are resumed (exit 1); "
        "pause-stragglers: at the deadline the host suspends anyway and pauses the rest; "
        "force: no asking, the host suspends now (docs/host-suspend.md).",
    )
    suspend.add_argument(
        "--policy", choices=tuple(POLICIES), default="wait-all", help="default: wait-all"
    )
    suspend.add_argument(
        "--deadline-ms",
        metavar="MS",
        type=count,
        default=5000,
        help="how long the domUs have to suspend (default 5000)",
    )

    events = commands.add_parser("events", help="follow every state change (WatchEvents)")
    events.add_argument("--count", metavar="N", type=count, help="stop after N events")
    events.add_argument(
        "--timeout",
        metavar="S",
        type=seconds,
        help="stop after S seconds (exit 1 if --count events did not all come)",
    )

    chart = commands.add_parser("timeline", help="the last host suspend and resume, step by step")
    chart.add_argument(
        "--svg", metavar="FILE", type=Path, help="write it as an SVG Gantt chart to FILE"
    )
    return parser


# --------------------------------------------------------------- commands


class Ctl:
    def __init__(self, args: argparse.Namespace, out: Output, where: Situation) -> None:
        self.args = args
        self.out = out
        self.where = where

    def result(self, human: str, data: dict[str, Any]) -> int:
        self.out.emit(human, data)
        return EXIT_OK

    async def run(self) -> int:
        args = self.args
        if args.command == "certs":
            return await asyncio.to_thread(self.certs_init)
        name = args.principal.removeprefix("operator/") if args.principal else None
        tls = client_tls(args.certs, f"operator/{name or 'admin'}")
        principal = f"operator/{name}" if name else None
        async with Operator(args.target, principal=principal, tls=tls) as op:
            handler = getattr(self, "do_" + self.args.command.replace("-", "_"))
            code: int = await handler(op)
            return code

    def certs_init(self) -> int:
        # Imported here: only this command needs the cryptography package.
        from mediatord import certs
        from mediatord.board import BoardError, load_board

        args = self.args
        try:
            board = load_board(args.board)
        except BoardError as error:
            return self.out.refused(f"invalid board file: {error}", {"error": "BoardError"})
        try:
            operators = tuple(args.operator or ("admin",))
            if args.host:
                written = certs.init(args.directory, board, operators, tuple(args.host))
            else:
                written = certs.init(args.directory, board, operators)
        except OSError as error:
            return self.out.refused(
                f"cannot write {error.filename}: {error.strerror}", {"error": "OSError"}
            )
        names = ", ".join(p.name for p in written)
        return self.result(
            f"wrote {len(written)} files to {args.directory}: {names}\n"
            f"serve with: mediatord serve --listen 127.0.0.1:50443 "
            f"--tls-cert {args.directory / 'server.pem'} --tls-key "
            f"{args.directory / 'server.key'} --client-ca {args.directory / 'ca.pem'}",
            {"written": [str(p) for p in written]},
        )

    async def do_list(self, op: Operator) -> int:
        domains = await op.domains()
        rows = [
            [
                d.name,
                d.id,
                state_name(d.state) + (" (hardware)" if d.hardware_domain else ""),
                f"{vcpus_on(d)}/{len(d.vcpus)}",
                ", ".join(d.devices) or "-",
            ]
            for d in domains
        ]
        human = table(("NAME", "ID", "STATE", "VCPUS", "DEVICES"), rows)
        data = [message_dict(d) | {"vcpus_on": vcpus_on(d)} for d in domains]
        return self.result(human, {"domains": data})

    async def do_show(self, op: Operator) -> int:
        name: str = self.args.domain
        domain = await op.domain(name)
        if domain is None:
            return self.out.refused(
                f"no domain named {name!r}: check `mediatorctl list`",
                {"error": "NotFound", "domain": name},
            )
        system = await op.system()
        devices = [d for d in system.devices if d.owner == name or name in d.requirements]
        arch = "aarch32" if domain.aarch32 else "aarch64"
        kind = "hardware domain" if domain.hardware_domain else "domU"
        pending = ", ".join(map(str, domain.pending_irqs)) or "none"
        vcpu_rows = [
            [
                v.index,
                f"{v.mpidr:#x}",
                power_name(v.power),
                f"{v.entry_point:#x}",
                f"{v.context_id:#x}",
            ]
            for v in domain.vcpus
        ]
        lines = [
            f"domain {domain.name} (id {domain.id}, {kind}): {state_name(domain.state)}",
            f"  RAM {domain.ram_base:#x} + {domain.ram_size:#x}, {arch}",
            f"  vCPUs on: {vcpus_on(domain)}/{len(domain.vcpus)}; last event seq "
            f"{domain.event_seq}; pending IRQs: {pending}",
            "  vCPUs:",
            table(("VCPU", "MPIDR", "POWER", "ENTRY", "CONTEXT"), vcpu_rows, "    "),
            "  devices:",
            table(DEVICE_HEADERS, device_rows(devices), "    ") if devices else "    none",
        ]
        return self.result(
            "\n".join(lines),
            {
                "domain": message_dict(domain) | {"vcpus_on": vcpus_on(domain)},
                "devices": [message_dict(d) for d in devices],
            },
        )

    async def do_system(self, op: Operator) -> int:
        s = await op.system()
        suspend = timing_us(s.last_suspend) if s.HasField("last_suspend") else "never"
        resume = timing_us(s.last_resume) if s.HasField("last_resume") else "never"
        pcpu_rows = [
            [p.index, f"{p.mpidr:#x}", enum_name("PCPU_STATE_", pb.PcpuState.Name(p.state))]
            for p in s.pcpu_states
        ]
        lines = [
            f"board {s.board} ({s.backend}): host {host_name(s.host_state)}, {s.domains} domains",
            f"  clock {secs(s.now_ns)} s, counter {s.counter:#x}",
            f"  watchdog: {'enabled' if s.watchdog_enabled else 'disabled'}",
            f"  last suspend: {suspend}; last resume: {resume}",
            f"  pCPUs ({s.pcpus}, boot pCPU {s.boot_pcpu}):",
            table(("PCPU", "MPIDR", "STATE"), pcpu_rows, "    "),
            "  devices:",
            table(DEVICE_HEADERS, device_rows(s.devices), "    "),
        ]
        data = message_dict(s)
        return self.result("\n".join(lines), data)

    async def do_create(self, op: Operator) -> int:
        a = self.args
        self.where.domain = a.name
        d = await op.create_domain(
            a.name, a.vcpus, a.ram_base, a.ram_size, aarch32=a.aarch32, devices=tuple(a.device)
        )
        return self.result(
            f"created domain {d.name} (id {d.id}): {len(d.vcpus)} vCPUs, RAM {d.ram_base:#x} + "
            f"{d.ram_size:#x}, {'aarch32' if d.aarch32 else 'aarch64'}, devices: "
            f"{', '.join(d.devices) or 'none'}",
            {"created": message_dict(d)},
        )

    async def do_destroy(self, op: Operator) -> int:
        await op.destroy_domain(self.args.name)
        name = self.args.name
        return self.result(f"destroyed domain {name}", {"destroyed": name})

    async def do_assign(self, op: Operator) -> int:
        a = self.args
        await op.assign_device(a.domain, a.device)
        return self.result(
            f"assigned {a.device} to {a.domain}",
            {"assigned": {"domain": a.domain, "device": a.device}},
        )

    async def do_release(self, op: Operator) -> int:
        a = self.args
        await op.release_device(a.domain, a.device)
        return self.result(
            f"released {a.device} from {a.domain}",
            {"released": {"domain": a.domain, "device": a.device}},
        )

    async def do_irq(self, op: Operator) -> int:
        a = self.args
        r = await op.raise_irq(a.line, a.domain, a.vcpu)
        outcome = pb.RaiseInterruptResponse.Outcome.Name(r.outcome).removeprefix("OUTCOME_")
        what = OUTCOME_TEXT.get(r.outcome, "").format(
            domain=r.domain or "-", vcpu=r.vcpu, reason=r.reason or "no reason given"
        )
        host = "; woke the host first" if r.woke_host else ""
        return self.result(
            f"IRQ {a.line}: {outcome}: {what}{host}",
            {"irq": a.line, **message_dict(r)},
        )

    async def do_state(self, op: Operator) -> int:
        document = await op.export_state()
        text = json.dumps(document, indent=2) + "\n"
        output: Path | None = self.args.output
        if output is None:
            sys.stdout.write(text)
            return EXIT_OK
        try:
            await asyncio.to_thread(output.write_text, text)
        except OSError as error:
            return self.out.refused(
                f"cannot write {error.filename}: {error.strerror}", {"error": "OSError"}
            )
        journal = document["journal"] or {}
        return self.result(
            f"wrote {output}: {len(document['domains'])} domains, journal at record "
            f"{journal.get('seq', 'none (the daemon keeps no state)')}",
            {"written": str(output), "seq": journal.get("seq")},
        )

    async def do_suspend(self, op: Operator) -> int:
        a = self.args
        reply = await op.request_system_suspend(POLICIES[a.policy], a.deadline_ms)
        outcome = pb.RequestSystemSuspendResponse.Outcome.Name(reply.outcome)
        outcome = outcome.removeprefix("OUTCOME_").lower()
        data = {**message_dict(reply), "outcome": outcome}
        suspended = ", ".join(reply.suspended) or "none"
        if reply.outcome != pb.RequestSystemSuspendResponse.OUTCOME_READY:
            why = (
                f"vetoed by {reply.vetoed_by}: {reply.reason}" if reply.vetoed_by else reply.reason
            )
            return self.out.refused(
                f"system suspend aborted ({outcome}): {why}; resumed: {suspended}", data
            )
        stragglers = ", ".join(reply.stragglers)
        human = f"ready: suspended {suspended}" + (
            f"; to be paused by the host suspend: {stragglers}" if stragglers else ""
        )
        return self.result(human + "; the hardware domain suspends the host now", data)

    async def do_fault(self, op: Operator) -> int:
        a = self.args
        await op.inject_fault(a.step, a.count, a.error)
        how = _psci(a.error) if a.error else "its usual error"
        human = (
            f"cleared the faults of {a.step}"
            if a.count == 0
            else f"the next {a.count} run(s) of {a.step} fail with {how}"
        )
        return self.result(human, {"step": a.step, "count": a.count, "error": a.error})

    async def do_events(self, op: Operator) -> int:
        a = self.args
        # A read first: an unreachable daemon or a refused caller fails at once.
        await op.system()
        seen = 0
        stream = op.watch()
        try:
            async with asyncio.timeout(a.timeout):
                async for event in stream:
                    seen += 1
                    kind = event.WhichOneof("kind") or "?"
                    self.result(
                        f"{event.seq:>6}  {secs(event.time_ns)}  {kind:<14} {event_text(event)}",
                        {"kind": kind, **message_dict(event)},
                    )
                    if a.count is not None and seen >= a.count:
                        break
        except TimeoutError:
            if a.count is not None:
                return self.out.refused(
                    f"only {seen} of {a.count} events came within {a.timeout} s",
                    {"error": "timeout", "events": seen},
                )
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        return EXIT_OK

    async def do_timeline(self, op: Operator) -> int:
        s = await op.system()
        rows = timeline.of_system(s)
        data: dict[str, Any] = {
            "steps": [asdict(r) | {"duration_ns": r.duration_ns} for r in rows],
            "last_suspend_ns": s.last_suspend.end_ns - s.last_suspend.start_ns,
            "last_resume_ns": s.last_resume.end_ns - s.last_resume.start_ns,
        }
        svg_path: Path | None = self.args.svg
        if svg_path is not None:
            try:
                await asyncio.to_thread(svg_path.write_text, timeline.svg(rows) + "\n")
            except OSError as error:
                return self.out.refused(
                    f"cannot write {svg_path}: {error.strerror}", {"error": "OSError"}
                )
            data["svg"] = str(svg_path)
            human = (
                f"wrote {svg_path}: {len(rows)} steps of the last host suspend and resume"
                if rows
                else f"wrote {svg_path}: an empty chart (no host suspend yet)"
            )
            return self.result(human, data)
        lines = [timeline.text(rows)]
        if s.HasField("last_suspend"):
            lines.append(f"suspend: {timing_us(s.last_suspend)} (dom0's SYSTEM_SUSPEND to the "
                         "SoC suspended)")  # fmt: skip
        if s.HasField("last_resume"):
            lines.append(f"resume: {timing_us(s.last_resume)} (the wake to dom0 running)")
        return self.result("\n".join(lines), data)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json, PROG)
    where = Situation(target=args.target)
    try:
        return asyncio.run(Ctl(args, out, where).run())
    except RpcError as error:
        return out.refused(_control_refusal(error, args, where), _fields(error))
    except MediatorError as error:
        return refusal(out, error, where)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return quiet_exit()


def _fields(error: RpcError) -> dict[str, Any]:
    return {"error": type(error).__name__, "grpc_code": error.code.name, "details": error.details}


def _control_refusal(error: RpcError, args: argparse.Namespace, where: Situation) -> str:
    """Control refusals with what to try next."""
    if isinstance(error, NotPermittedError):
        return f"not permitted: {error.details}: use --principal operator/NAME or none"
    if isinstance(error, UnavailableError):
        return explain(error, where)
    code = error.code.name
    hints = {
        "NOT_FOUND": "check `mediatorctl list` and `mediatorctl system`",
        "ALREADY_EXISTS": "check `mediatorctl list`",
        "FAILED_PRECONDITION": "check `mediatorctl system` and `mediatorctl show DOMAIN`",
        "INVALID_ARGUMENT": f"check the arguments (`mediatorctl {args.command} --help`)",
    }
    hint = hints.get(code)
    return f"{error.details}: {hint}" if hint else f"{code}: {error.details}"


if __name__ == "__main__":
    sys.exit(main())
