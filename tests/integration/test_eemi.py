"""EEMI mediation end to end (design section 7, docs/eemi-access.md).

Guests power their devices with EEMI calls (SiP SMCs, packed as Linux's
``zynqmp_pm_invoke_fn`` packs them) through ``Guest.Call``; an operator moves devices
between domains with ``Control.AssignDevice`` / ``ReleaseDevice`` and watches
``GetSystem`` (each device's owner, power, wake source and requirements) and
``WatchEvents`` (``firmware_call`` and ``device_owner`` events). The seed's domU flow
(a domU requests its UART as a wake source, suspends, and that UART wakes it) runs
with the host awake and with the host suspended too. Nothing sleeps: stream reads
are awaited with a timeout.
"""

from __future__ import annotations

import grpc
import pytest
from vcpu_events import kind, pause, resume, start, unpause, wake

from mediatord.api.mediator.v1 import mediator_pb2 as pb

RAM_BASE = 0x4000_0000
CPU_OFF = 0x8400_0002
CPU_ON_64 = 0xC400_0003
SYSTEM_SUSPEND_64 = 0xC400_000E
SUCCESS = [0, 0, 0, 0]
NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF

# EEMI (docs/eemi-access.md): function ID 0xC2000000 | api, SMC32 form 0x82000000 | api.
PM_SIP_SVC = 0xC200_0000
PM_SIP_SVC_32 = 0x8200_0000
GET_NODE_STATUS = 3
SET_WAKEUP_SOURCE = 11
REQ_NODE = 13
RELEASE_NODE = 14
SET_REQUIREMENT = 15
NODE_APU = 1
ACCESS, CONTEXT, WAKEUP = 0x1, 0x2, 0x4
MAX_QOS = 100
ACK_BLOCKING = 2
XST_PM_NO_ACCESS = 2002
DENIED = [XST_PM_NO_ACCESS, 0, 0, 0]  # a denied call sets only the status
XST_PM_INVALID_PARAM = 15

# The default board (design section 9): EEMI node and IRQ of each device.
UART_0, UART_1, SD_1, ETH_0, USB_0 = 33, 34, 40, 29, 22
IRQ = {"UART_0": 53, "UART_1": 54, "SD_1": 81, "ETH_0": 89, "USB_0": 97}
BOARD_DEVICES = ("UART_0", "UART_1", "SD_0", "SD_1", "ETH_0", "ETH_3", "USB_0", "GPU")

# Where each domain resumes after its SYSTEM_SUSPEND, and with which x0.
DOM0_RESUME = (0x4030_0000, 0xD0)
DOMU1_RESUME = (0x4010_0000, 0xD1)
SECONDARY = (RAM_BASE + 0x8_0000, 0x51)

Outcome = pb.RaiseInterruptResponse


def pack(arg0: int = 0, arg1: int = 0, arg2: int = 0, arg3: int = 0) -> tuple[int, int]:
    """x1 = arg1 << 32 | arg0, x2 = arg3 << 32 | arg2 (docs/eemi-access.md)."""
    return (arg1 << 32 | arg0, arg3 << 32 | arg2)


async def pm(mediator, domain: str, api: int, *args: int) -> list[int]:
    """One EEMI call from vCPU 0 of ``domain``: x0..x3."""
    return await mediator.call(domain, PM_SIP_SVC | api, *pack(*args))


async def request(mediator, domain: str, node: int, caps: int = ACCESS) -> list[int]:
    """PM_REQ_NODE as Linux's zynqmp_pm_request_node issues it."""
    return await pm(mediator, domain, REQ_NODE, node, caps, MAX_QOS, ACK_BLOCKING)


def delivered(domain: str, event: pb.VcpuEvent):
    """Matches the WatchEvents form of ``event`` delivered to ``domain``."""
    wanted = pb.DomainVcpuEvent(domain=domain, event=event)
    return lambda e: kind(e) == "vcpu_event" and e.vcpu_event == wanted


def index(events: list[pb.SystemEvent], match) -> int:
    found = [i for i, e in enumerate(events) if match(e)]
    assert len(found) == 1, f"expected one matching event, found {len(found)}"
    return found[0]


def firmware_calls(events: list[pb.SystemEvent]) -> list[tuple[str, int, str, int]]:
    return [
        (
            e.firmware_call.domain,
            e.firmware_call.api,
            e.firmware_call.verdict,
            e.firmware_call.status,
        )
        for e in events
        if kind(e) == "firmware_call"
    ]


def owner_changes(events: list[pb.SystemEvent]) -> list[tuple[str, str, bool]]:
    return [
        (e.device_owner.domain, e.device_owner.device, e.device_owner.assigned)
        for e in events
        if kind(e) == "device_owner"
    ]


async def devices(mediator) -> dict[str, pb.DeviceInfo]:
    return {d.name: d for d in (await mediator.system()).devices}


def device(
    owner: str,
    *,
    powered: bool = True,
    wake_source: bool = True,
    requirements: dict[str, int] | None = None,
) -> tuple[str, bool, bool, dict[str, int]]:
    """What GetSystem should say of a device: (owner, powered, wake source, requirements)."""
    return (owner, powered, wake_source, requirements or {})


def state(info: pb.DeviceInfo) -> tuple[str, bool, bool, dict[str, int]]:
    return (info.owner, info.powered, info.wake_source, dict(info.requirements))


async def suspend_domu1(mediator, events) -> None:
    """What domu1's kernel does to suspend (seed, "Suspending Guests"): its secondary
    goes down by CPU_OFF, then the boot vCPU calls SYSTEM_SUSPEND."""
    assert await mediator.call("domu1", CPU_ON_64, 1, *SECONDARY) == SUCCESS
    assert await events.next() == start(2, 1, *SECONDARY)
    assert await mediator.call("domu1", CPU_OFF, vcpu=1) == SUCCESS
    assert await mediator.call("domu1", SYSTEM_SUSPEND_64, *DOMU1_RESUME) == SUCCESS
    assert (await mediator.domain("domu1")).state == pb.DOMAIN_STATE_SUSPENDED


async def test_domu_powers_only_its_own_devices_and_its_uart_wakes_it(mediator) -> None:
    watch = await mediator.watch()
    domu1 = mediator.attach("domu1")
    assert await domu1.next() == start(1, 0, RAM_BASE)

    # domu1 asks for its UART as a wake-up capable device (zynqmp_pm_request_node).
    assert await request(mediator, "domu1", UART_1, ACCESS | WAKEUP) == SUCCESS
    # USB_0 is domu2's: domu1 may not power it, domu2 may.
    assert await request(mediator, "domu1", USB_0) == DENIED
    assert await pm(mediator, "domu1", GET_NODE_STATUS, USB_0) == DENIED
    assert await request(mediator, "domu2", USB_0) == SUCCESS
    usb = (await devices(mediator))["USB_0"]
    assert state(usb) == device("domu2", requirements={"domu2": ACCESS})
    # GET_NODE_STATUS: x0 = status | power << 32, x1 = caps | usage << 32.
    assert await pm(mediator, "domu2", GET_NODE_STATUS, USB_0) == [1 << 32, ACCESS | 1 << 32, 0, 0]

    # domu2 lets USB_0 go: nobody requires it any more, so it powers off.
    assert await pm(mediator, "domu2", RELEASE_NODE, USB_0) == SUCCESS
    usb = (await devices(mediator))["USB_0"]
    assert state(usb) == device("domu2", powered=False)
    assert await pm(mediator, "domu2", GET_NODE_STATUS, USB_0) == [0, 0, 0, 0]

    # domu1 makes its UART a wake source of its own APU (zynqmp_pm_set_wakeup_source).
    assert await pm(mediator, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 1) == SUCCESS
    uart = (await devices(mediator))["UART_1"]
    assert state(uart) == device("domu1", requirements={"domu1": ACCESS | WAKEUP})

    await suspend_domu1(mediator, domu1)
    # The host stays up ("After an unprivileged guest suspends, Xen will not suspend").
    assert (await mediator.system()).host_state == pb.HOST_STATE_ACTIVE
    raised = await mediator.raise_irq(IRQ["UART_1"])
    assert raised == Outcome(outcome=Outcome.OUTCOME_WOKE_DOMAIN, domain="domu1", vcpu=0)
    assert await domu1.next() == resume(3, 0, *DOMU1_RESUME)
    assert await domu1.next() == wake(4, 0, IRQ["UART_1"])
    assert (await mediator.domain("domu1")).state == pb.DOMAIN_STATE_RUNNING

    events = await watch.until(delivered("domu1", wake(4, 0, IRQ["UART_1"])))
    cancel(watch, domu1)
    assert firmware_calls(events) == [
        ("domu1", REQ_NODE, "allow", 0),
        ("domu1", REQ_NODE, "deny", XST_PM_NO_ACCESS),
        ("domu1", GET_NODE_STATUS, "deny", XST_PM_NO_ACCESS),
        ("domu2", REQ_NODE, "allow", 0),
        ("domu2", GET_NODE_STATUS, "allow", 0),
        ("domu2", RELEASE_NODE, "allow", 0),
        ("domu2", GET_NODE_STATUS, "allow", 0),
        ("domu1", SET_WAKEUP_SOURCE, "allow", 0),
    ]
    assert owner_changes(events) == []


async def test_requested_wake_source_wakes_the_suspended_host_then_the_domu(
    manual_mediator,
) -> None:
    mediator = manual_mediator
    watch = await mediator.watch()
    attached = {name: mediator.attach(name) for name in ("dom0", "domu1", "domu2")}
    for events in attached.values():
        assert await events.next() == start(1, 0, RAM_BASE)

    assert await request(mediator, "domu1", UART_1, ACCESS | WAKEUP) == SUCCESS
    assert await pm(mediator, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 1) == SUCCESS
    # domu2 used USB_0 and released it, and it is no wake source any more.
    assert await request(mediator, "domu2", USB_0) == SUCCESS
    assert await pm(mediator, "domu2", RELEASE_NODE, USB_0) == SUCCESS
    assert await pm(mediator, "domu2", SET_WAKEUP_SOURCE, NODE_APU, USB_0, 0) == SUCCESS
    # domu2 keeps SD_1 requested (so powered), but not as a wake source.
    assert await request(mediator, "domu2", SD_1) == SUCCESS
    assert await pm(mediator, "domu2", SET_WAKEUP_SOURCE, NODE_APU, SD_1, 0) == SUCCESS

    await suspend_domu1(mediator, attached["domu1"])
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    assert await attached["domu2"].next() == pause(2)
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_SUSPENDED
    # In suspend what nobody requires and no wake needs is off: USB_0 (already off).
    # SD_1 is required, the others are wake sources.
    assert {d.name: state(d) for d in system.devices} == {
        "UART_0": device("dom0"),
        "SD_0": device("dom0"),
        "ETH_3": device("dom0"),
        "GPU": device("dom0"),
        "UART_1": device("domu1", requirements={"domu1": ACCESS | WAKEUP}),
        "ETH_0": device("domu1"),
        "USB_0": device("domu2", powered=False, wake_source=False),
        "SD_1": device("domu2", wake_source=False, requirements={"domu2": ACCESS}),
    }

    # The released, non-wake USB_0 is off: its interrupt is dropped, the host sleeps on.
    raised = await mediator.raise_irq(IRQ["USB_0"])
    assert (raised.outcome, raised.domain, raised.vcpu, raised.woke_host) == (
        Outcome.OUTCOME_DROPPED,
        "domu2",
        0,
        False,
    )
    assert "USB_0" in raised.reason
    # SD_1 is powered but no wake source: its interrupt waits, the SoC does not wake.
    raised = await mediator.raise_irq(IRQ["SD_1"])
    assert (raised.outcome, raised.domain, raised.woke_host) == (
        Outcome.OUTCOME_PENDING,
        "domu2",
        False,
    )
    assert (await mediator.system()).host_state == pb.HOST_STATE_SUSPENDED

    # domu1's UART (requested, a wake source) wakes the host first, then domu1.
    raised = await mediator.raise_irq(IRQ["UART_1"])
    assert raised == Outcome(
        outcome=Outcome.OUTCOME_WOKE_DOMAIN, domain="domu1", vcpu=0, woke_host=True
    )
    assert await attached["dom0"].next() == resume(2, 0, *DOM0_RESUME)
    assert await attached["domu1"].next() == resume(3, 0, *DOMU1_RESUME)
    assert await attached["domu1"].next() == wake(4, 0, IRQ["UART_1"])
    # domu2 is unpaused, and SD_1's interrupt that waited is delivered.
    assert await attached["domu2"].next() == unpause(3)
    assert await attached["domu2"].next() == wake(4, 0, IRQ["SD_1"])
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_ACTIVE
    powered = {d.name: d.powered for d in system.devices}
    assert powered == {name: name != "USB_0" for name in BOARD_DEVICES}

    events = await watch.until(delivered("domu1", wake(4, 0, IRQ["UART_1"])))
    cancel(watch, *attached.values())
    dom0_resumed = index(events, delivered("dom0", resume(2, 0, *DOM0_RESUME)))
    domu1_resumed = index(events, delivered("domu1", resume(3, 0, *DOMU1_RESUME)))
    assert dom0_resumed < domu1_resumed  # seed 4.2: the host and dom0 first
    assert firmware_calls(events)[:7] == [
        ("domu1", REQ_NODE, "allow", 0),
        ("domu1", SET_WAKEUP_SOURCE, "allow", 0),
        ("domu2", REQ_NODE, "allow", 0),
        ("domu2", RELEASE_NODE, "allow", 0),
        ("domu2", SET_WAKEUP_SOURCE, "allow", 0),
        ("domu2", REQ_NODE, "allow", 0),
        ("domu2", SET_WAKEUP_SOURCE, "allow", 0),
    ]


async def test_assign_and_release_device_move_eemi_rights(mediator) -> None:
    watch = await mediator.watch()
    domu1 = mediator.attach("domu1")
    assert await domu1.next() == start(1, 0, RAM_BASE)

    # domu2 is done with USB_0: it releases its requirement, the operator the device.
    assert await request(mediator, "domu2", USB_0) == SUCCESS
    assert await pm(mediator, "domu2", RELEASE_NODE, USB_0) == SUCCESS
    release = pb.ReleaseDeviceRequest(domain="domu2", device="USB_0")
    assert await mediator.control.ReleaseDevice(release) == pb.ReleaseDeviceResponse()
    usb = (await devices(mediator))["USB_0"]
    assert state(usb) == device("", powered=False)
    assert await request(mediator, "domu2", USB_0) == DENIED

    assign = pb.AssignDeviceRequest(domain="domu1", device="USB_0")
    assert await mediator.control.AssignDevice(assign) == pb.AssignDeviceResponse()
    listed = {d.name: list(d.devices) for d in (await mediator.domains()).domains}
    assert listed == {
        "dom0": ["UART_0", "SD_0", "ETH_3", "GPU"],
        "domu1": ["UART_1", "ETH_0", "USB_0"],
        "domu2": ["SD_1"],
    }
    # Now domu1 may power USB_0 and domu2 may not.
    assert await request(mediator, "domu1", USB_0) == SUCCESS
    assert await request(mediator, "domu2", USB_0) == DENIED
    usb = (await devices(mediator))["USB_0"]
    assert state(usb) == device("domu1", requirements={"domu1": ACCESS})
    assert usb.irq == IRQ["USB_0"]
    # Its interrupt goes to its new owner.
    raised = await mediator.raise_irq(IRQ["USB_0"])
    assert raised == Outcome(outcome=Outcome.OUTCOME_DELIVERED, domain="domu1", vcpu=0)
    assert await domu1.next() == wake(2, 0, IRQ["USB_0"])

    events = await watch.until(delivered("domu1", wake(2, 0, IRQ["USB_0"])))
    cancel(watch, domu1)
    assert owner_changes(events) == [("domu2", "USB_0", False), ("domu1", "USB_0", True)]
    assert firmware_calls(events) == [
        ("domu2", REQ_NODE, "allow", 0),
        ("domu2", RELEASE_NODE, "allow", 0),
        ("domu2", REQ_NODE, "deny", XST_PM_NO_ACCESS),
        ("domu1", REQ_NODE, "allow", 0),
        ("domu2", REQ_NODE, "deny", XST_PM_NO_ACCESS),
    ]


@pytest.mark.parametrize(
    ("domain", "device_", "code"),
    [
        pytest.param("domu2", "UART_1", grpc.StatusCode.FAILED_PRECONDITION, id="owned"),
        pytest.param("domu1", "UART_1", grpc.StatusCode.FAILED_PRECONDITION, id="already-its"),
        pytest.param("domu1", "NOPE", grpc.StatusCode.NOT_FOUND, id="unknown-device"),
        pytest.param("domu1", "USB_1", grpc.StatusCode.NOT_FOUND, id="not-on-board"),
        pytest.param("domu9", "UART_1", grpc.StatusCode.NOT_FOUND, id="unknown-domain"),
    ],
)
async def test_assign_device_refusals(mediator, domain, device_, code) -> None:
    before = await mediator.system()
    error = await mediator.refusal(
        mediator.control.AssignDevice(pb.AssignDeviceRequest(domain=domain, device=device_))
    )
    assert error.code() == code
    assert await mediator.system() == before


@pytest.mark.parametrize(
    ("domain", "device_", "code"),
    [
        pytest.param("domu2", "UART_1", grpc.StatusCode.FAILED_PRECONDITION, id="not-its"),
        pytest.param("domu1", "NOPE", grpc.StatusCode.NOT_FOUND, id="unknown-device"),
        pytest.param("domu9", "UART_1", grpc.StatusCode.NOT_FOUND, id="unknown-domain"),
    ],
)
async def test_release_device_refusals(mediator, domain, device_, code) -> None:
    before = await mediator.system()
    error = await mediator.refusal(
        mediator.control.ReleaseDevice(pb.ReleaseDeviceRequest(domain=domain, device=device_))
    )
    assert error.code() == code
    assert await mediator.system() == before


@pytest.mark.parametrize("caller", ["domu1", "domu2", "dom0"])
async def test_domains_may_not_move_devices(mediator, caller) -> None:
    """A domU has no Control RPC; the hardware domain only reads (design section 4)."""
    metadata = mediator.identity(caller)
    release = pb.ReleaseDeviceRequest(domain="domu2", device="USB_0")
    error = await mediator.refusal(mediator.control.ReleaseDevice(release, metadata=metadata))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assign = pb.AssignDeviceRequest(domain="domu1", device="USB_0")
    error = await mediator.refusal(mediator.control.AssignDevice(assign, metadata=metadata))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    usb = (await devices(mediator))["USB_0"]
    assert usb.owner == "domu2"


async def test_assign_device_needs_an_idle_device(mediator) -> None:
    """An unassigned device is the hardware domain's: while dom0 holds a requirement on
    it, it cannot be given away."""
    release = pb.ReleaseDeviceRequest(domain="domu2", device="SD_1")
    assert await mediator.control.ReleaseDevice(release) == pb.ReleaseDeviceResponse()
    assert await request(mediator, "dom0", SD_1) == SUCCESS
    assign = pb.AssignDeviceRequest(domain="domu1", device="SD_1")
    error = await mediator.refusal(mediator.control.AssignDevice(assign))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    sd = (await devices(mediator))["SD_1"]
    assert state(sd) == device("", requirements={"dom0": ACCESS})

    assert await pm(mediator, "dom0", RELEASE_NODE, SD_1) == SUCCESS
    assert await mediator.control.AssignDevice(assign) == pb.AssignDeviceResponse()
    sd = (await devices(mediator))["SD_1"]
    assert state(sd) == device("domu1", powered=False)
    assert await request(mediator, "dom0", SD_1) == DENIED
    assert await request(mediator, "domu1", SD_1) == SUCCESS


async def test_release_device_drops_the_domains_requirement_and_wake_source(mediator) -> None:
    assert await request(mediator, "domu2", SD_1, ACCESS | CONTEXT) == SUCCESS
    assert await pm(mediator, "domu2", SET_WAKEUP_SOURCE, NODE_APU, SD_1, 0) == SUCCESS
    sd = (await devices(mediator))["SD_1"]
    assert state(sd) == device("domu2", wake_source=False, requirements={"domu2": ACCESS | CONTEXT})
    release = pb.ReleaseDeviceRequest(domain="domu2", device="SD_1")
    assert await mediator.control.ReleaseDevice(release) == pb.ReleaseDeviceResponse()
    # Unrequested again (and so off), its wake source back to the board's default.
    sd = (await devices(mediator))["SD_1"]
    assert state(sd) == device("", powered=False)
    assert list((await mediator.domain("domu2")).devices) == ["USB_0"]
    # domu2 can no longer reach it; its interrupt has nowhere to go.
    assert await pm(mediator, "domu2", RELEASE_NODE, SD_1) == DENIED
    raised = await mediator.raise_irq(IRQ["SD_1"])
    assert raised.outcome == Outcome.OUTCOME_DROPPED


async def test_get_system_maps_requirements_by_domain(mediator) -> None:
    assert all(not d.requirements for d in (await mediator.system()).devices)
    assert await request(mediator, "domu1", UART_1, ACCESS | WAKEUP) == SUCCESS
    assert await request(mediator, "dom0", UART_0, ACCESS) == SUCCESS
    requirements = {n: dict(d.requirements) for n, d in (await devices(mediator)).items()}
    assert requirements == {
        name: {"UART_1": {"domu1": ACCESS | WAKEUP}, "UART_0": {"dom0": ACCESS}}.get(name, {})
        for name in BOARD_DEVICES
    }
    # SET_REQUIREMENT changes the capabilities; with none left the node powers off.
    requirement = (UART_1, ACCESS, MAX_QOS, ACK_BLOCKING)
    assert await pm(mediator, "domu1", SET_REQUIREMENT, *requirement) == SUCCESS
    uart = (await devices(mediator))["UART_1"]
    assert state(uart) == device("domu1", requirements={"domu1": ACCESS})
    assert await pm(mediator, "domu1", SET_REQUIREMENT, UART_1, 0, MAX_QOS, ACK_BLOCKING) == SUCCESS
    uart = (await devices(mediator))["UART_1"]
    assert state(uart) == device("domu1", powered=False, requirements={"domu1": 0})
    assert await pm(mediator, "domu1", GET_NODE_STATUS, UART_1) == [0, 1 << 32, 0, 0]
    # A second request from the same master: XST_PM_DOUBLE_REQ.
    assert await request(mediator, "domu1", UART_1) == [2004, 0, 0, 0]
    assert await pm(mediator, "domu1", RELEASE_NODE, UART_1) == SUCCESS
    assert dict((await devices(mediator))["UART_1"].requirements) == {}


async def test_call_forms(mediator) -> None:
    """The SMC32 form reads the upper register halves as 0 (so REQ_NODE's capabilities
    are 0: invalid); reserved bits set or an unknown API: NOT_SUPPORTED for a domU."""
    x1, x2 = pack(UART_1, ACCESS, MAX_QOS, ACK_BLOCKING)
    smc32 = await mediator.call("domu1", PM_SIP_SVC_32 | REQ_NODE, x1, x2)
    assert smc32 == [XST_PM_INVALID_PARAM, 0, 0, 0]
    # Reserved bits [23:16] set: not an EEMI call at all.
    assert await mediator.call("domu1", PM_SIP_SVC | 0x1_0000 | REQ_NODE, x1, x2) == [
        NOT_SUPPORTED,
        0,
        0,
        0,
    ]
    assert await pm(mediator, "domu1", 0x77) == [NOT_SUPPORTED, 0, 0, 0]
    assert dict((await devices(mediator))["UART_1"].requirements) == {}


def cancel(*streams) -> None:
    for stream in streams:
        stream.cancel()
