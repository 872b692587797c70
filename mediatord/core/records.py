"""Journal records: the inputs the core accepted, and their replay.

The journal stores what was *asked* (a guest call, a Control operation) with the
clock time it ran at, not the state it changed. The core is deterministic
(``tests/unit/test_replay_determinism.py``): fed the same inputs at the same
times, a freshly booted mediator of the same board reaches the same state,
emulated hardware included, and produces the same effects (the VcpuEvents an
agent had not yet received among them). One record per operation also makes
every operation atomic across a crash: a host suspend or resume is one
operation, so after a restart it either happened completely or not at all.

Each record also carries what the operation answered (x0, the new domain's id),
so a replay that comes out differently (another mediatord version, a changed
board) is detected at the first record instead of silently building another
state.

Which calls change nothing, and so are not journalled, is decided by
:func:`changes_state`; ``tests/unit/test_records.py`` checks that claim
against the whole state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from mediatord.core import eemi, psci, scfw, smccc, statecodec
from mediatord.core.clock import Clock
from mediatord.core.config import DomainConfig
from mediatord.core.effects import Effect
from mediatord.core.mediator import (
    HANDLERS,
    Blocked,
    Changed,
    Created,
    Destroyed,
    Mediator,
    Raised,
    Refused,
    Returned,
)
from mediatord.core.model import SuspendPolicy

# (kind, body): what the journal stores for one operation.
Record = tuple[str, bytes]

CALL: Final = "call"
CREATE_DOMAIN: Final = "create_domain"
DESTROY_DOMAIN: Final = "destroy_domain"
ASSIGN_DEVICE: Final = "assign_device"
RELEASE_DEVICE: Final = "release_device"
RAISE_INTERRUPT: Final = "raise_interrupt"
INJECT_FAULT: Final = "inject_fault"
REQUEST_SYSTEM_SUSPEND: Final = "request_system_suspend"
SUSPEND_VETO: Final = "suspend_veto"
EXPIRE_SUSPEND_REQUEST: Final = "expire_suspend_request"
# Not an input: the highest VcpuEvent seq each domain's agent has acknowledged, and
# the highest a stream wrote, so that a restart neither sends the first again nor
# gives the second to a new agent.
DELIVERED: Final = "delivered"

# PSCI / SMCCC functions that only read.
_READ_ONLY_PSCI: Final = frozenset(
    {
        smccc.SMCCC_VERSION,
        smccc.SMCCC_ARCH_FEATURES,
        psci.PsciFn.PSCI_VERSION,
        psci.PsciFn.AFFINITY_INFO,
        psci.PsciFn.AFFINITY_INFO_64,
        psci.PsciFn.MIGRATE_INFO_TYPE,
        psci.PsciFn.PSCI_FEATURES,
    }
)
# EEMI calls that only read (the firmware's state and the mediator's alike).
_READ_ONLY_EEMI: Final = frozenset(
    {
        eemi.PmApi.GET_API_VERSION,
        eemi.PmApi.GET_NODE_STATUS,
        eemi.PmApi.GET_OP_CHARACTERISTIC,
        eemi.PmApi.RESET_GET_STATUS,
        eemi.PmApi.MMIO_READ,
        eemi.PmApi.FPGA_GET_STATUS,
        eemi.PmApi.GET_CHIPID,
        eemi.PmApi.PINCTRL_GET_FUNCTION,
        eemi.PmApi.PINCTRL_CONFIG_PARAM_GET,
        eemi.PmApi.QUERY_DATA,
        eemi.PmApi.CLOCK_GETSTATE,
        eemi.PmApi.CLOCK_GETDIVIDER,
        eemi.PmApi.CLOCK_GETRATE,
        eemi.PmApi.CLOCK_GETPARENT,
        eemi.PmApi.PLL_GET_PARAMETER,
        eemi.PmApi.PLL_GET_MODE,
        eemi.PmApi.FPGA_GET_VERSION,
        eemi.PmApi.FPGA_GET_FEATURE_LIST,
        eemi.PmApi.FEATURE_CHECK,
        eemi.PmApi.GET_CALLBACK_DATA,
        eemi.PmApi.GET_TRUSTZONE_VERSION,
    }
)


def changes_state(function_id: int) -> bool:
    """Whether a guest call of ``function_id`` may change any state (and so must be
    journalled). An unknown function answers NOT_SUPPORTED and changes nothing."""
    fid = function_id & smccc.MASK32
    if fid in HANDLERS:
        return fid not in _READ_ONLY_PSCI
    if (fid >> smccc.OWNER_SHIFT) & smccc.OWNER_MASK == smccc.Owner.SIP:
        if (sc := scfw.decode(fid, ())) is not None:
            return (sc.svc, sc.func) not in scfw.READ_ONLY
        return fid & eemi.SIP_FUNCTION_MASK not in _READ_ONLY_EEMI
    return False


class ReplayError(Exception):
    """The journal cannot be replayed into this mediatord's state."""


def _body(*fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def call(
    now_ns: int,
    domain: str,
    vcpu: int,
    function_id: int,
    args: Sequence[int],
    *,
    x0: int | None,
) -> Record:
    """A guest call that was answered ``x0`` (None: it blocked)."""
    return CALL, _body(now_ns, domain, vcpu, function_id, list(args), x0)


def create_domain(now_ns: int, config: DomainConfig, domain_id: int) -> Record:
    return CREATE_DOMAIN, _body(now_ns, statecodec.encode(config), domain_id)


def destroy_domain(now_ns: int, name: str) -> Record:
    return DESTROY_DOMAIN, _body(now_ns, name)


def device(now_ns: int, assign: bool, domain: str, device: str) -> Record:
    return (ASSIGN_DEVICE if assign else RELEASE_DEVICE), _body(now_ns, domain, device)


def raise_interrupt(now_ns: int, irq: int, domain: str, vcpu: int, outcome: str) -> Record:
    return RAISE_INTERRUPT, _body(now_ns, irq, domain, vcpu, outcome)


def inject_fault(now_ns: int, step: str, count: int, error: int) -> Record:
    return INJECT_FAULT, _body(now_ns, step, count, error)


def request_system_suspend(
    now_ns: int, policy: SuspendPolicy, deadline_ns: int, by_hardware_domain: bool
) -> Record:
    return REQUEST_SYSTEM_SUSPEND, _body(now_ns, policy.value, deadline_ns, by_hardware_domain)


def suspend_veto(now_ns: int, domain: str, reason: str) -> Record:
    return SUSPEND_VETO, _body(now_ns, domain, reason)


def expire_suspend_request(now_ns: int) -> Record:
    return EXPIRE_SUSPEND_REQUEST, _body(now_ns)


def delivered(marks: dict[int, tuple[int, int]]) -> Record:
    """domain id -> (acknowledged seq, highest seq a stream wrote)."""
    return DELIVERED, _body([[i, acked, handed] for i, (acked, handed) in sorted(marks.items())])


def delivered_marks(body: bytes) -> list[tuple[int, int, int]]:
    """(domain id, acknowledged seq, handed seq) of a DELIVERED record. A record
    written before the handed seq was kept holds [domain id, seq]: both."""
    (rows,) = json.loads(body)
    return [(int(row[0]), int(row[1]), int(row[-1])) for row in rows]


_CONFIG: Final = statecodec.Decoder((DomainConfig,))


def replay(mediator: Mediator, clock: Clock, kind: str, body: bytes) -> tuple[Effect, ...]:
    """Run one journalled operation again at its recorded time; its effects.
    Raises :class:`ReplayError` when it does not come out as it did."""
    try:
        now_ns, *fields = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise ReplayError(f"{kind} record is not a JSON list: {exc}") from None
    if now_ns < clock.now_ns():
        raise ReplayError(f"{kind} record at {now_ns} ns is earlier than the one before it")
    clock.set(now_ns)
    try:
        return _replay(mediator, kind, fields)
    except (ValueError, TypeError, statecodec.CodecError) as exc:
        raise ReplayError(f"{kind} record {fields!r:.200} is malformed: {exc}") from None


def _replay(m: Mediator, kind: str, f: list[object]) -> tuple[Effect, ...]:
    match kind:
        case "call":
            domain, vcpu, fid, args, x0 = f
            outcome = m.call(domain, vcpu, fid, args)  # type: ignore[arg-type]
            got: object = outcome.regs[0] if isinstance(outcome, Returned) else None
            if isinstance(outcome, Refused) or got != x0:
                raise ReplayError(_differs(f"call {fid:#x} from {domain}", x0, outcome))
            assert isinstance(outcome, Returned | Blocked)
            return outcome.effects
        case "create_domain":
            config, domain_id = f
            created = m.create_domain(_CONFIG.decode(config))
            if not isinstance(created, Created) or created.domain.id != domain_id:
                raise ReplayError(_differs("create_domain", domain_id, created))
            return created.effects
        case "destroy_domain":
            (name,) = f
            return _expect(m.destroy_domain(name), Destroyed, kind)  # type: ignore[arg-type]
        case "assign_device" | "release_device":
            domain, device_name = f
            change = m.assign_device if kind == ASSIGN_DEVICE else m.release_device
            return _expect(change(domain, device_name), Changed, kind)  # type: ignore[arg-type]
        case "raise_interrupt":
            irq, domain, vcpu, expected = f
            raised = m.raise_interrupt(irq, domain, vcpu)  # type: ignore[arg-type]
            if not isinstance(raised, Raised) or raised.outcome.value != expected:
                raise ReplayError(_differs(f"interrupt {irq}", expected, raised))
            return raised.effects
        case "inject_fault":
            step, count, error = f
            refused = m.inject_fault(step, count, error)  # type: ignore[arg-type]
            if refused is not None:
                raise ReplayError(_differs(f"inject_fault {step}", "accepted", refused))
            return ()
        case "request_system_suspend":
            policy, deadline_ns, by_hardware_domain = f
            requested = m.request_system_suspend(
                SuspendPolicy(policy),
                deadline_ns,  # type: ignore[arg-type]
                by_hardware_domain,  # type: ignore[arg-type]
            )
            return _expect(requested, Changed, kind)
        case "suspend_veto":
            domain, reason = f
            return _expect(m.suspend_veto(domain, reason), Changed, kind)  # type: ignore[arg-type]
        case "expire_suspend_request":
            return _expect(m.expire_suspend_request(), Changed, kind)
    raise ReplayError(f"unknown record kind {kind!r}")


def _expect(result: object, kind: type, what: str) -> tuple[Effect, ...]:
    if not isinstance(result, kind):
        raise ReplayError(_differs(what, "accepted", result))
    effects: tuple[Effect, ...] = result.effects  # type: ignore[attr-defined]
    return effects


def _differs(what: str, recorded: object, got: object) -> str:
    if isinstance(got, Returned):
        got = got.regs[0]
    return (
        f"{what} was answered {recorded!r} when it was recorded, and {got!r} on replay: "
        "the journal was written by another mediatord version or for another board"
    )
