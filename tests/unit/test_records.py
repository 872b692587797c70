"""Journal records: the calls left out of the journal really change nothing, and a
replay that comes out differently is refused at the first record that differs."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_workload import BOARD, DOMAINS, op

from mediatord.backends import create_platform
from mediatord.core import eemi, psci, records, scfw, smccc
from mediatord.core.clock import ManualClock
from mediatord.core.mediator import HANDLERS, Mediator, Returned

SCFW_CALLS = [scfw.SCFW_BASE | 0xC000_0000 | svc << 8 | func for svc, func in scfw.READ_ONLY]
READ_ONLY = sorted(
    f for f in (*HANDLERS, *(0xC200_0000 | api for api in eemi.PmApi), *SCFW_CALLS)
    if not records.changes_state(f)
)  # fmt: skip


def booted() -> tuple[Mediator, ManualClock]:
    clock = ManualClock()
    mediator, _ = Mediator.boot(BOARD, create_platform(BOARD, clock))
    return mediator, clock


def test_the_read_only_set_is_what_the_specs_say() -> None:
    # Every PSCI function that changes power state is journalled; the queries are not.
    assert {f for f in READ_ONLY if f in HANDLERS} == {
        smccc.SMCCC_VERSION, smccc.SMCCC_ARCH_FEATURES, psci.PsciFn.PSCI_VERSION,
        psci.PsciFn.AFFINITY_INFO, psci.PsciFn.AFFINITY_INFO_64,
        psci.PsciFn.MIGRATE_INFO_TYPE, psci.PsciFn.PSCI_FEATURES,
    }  # fmt: skip
    assert records.changes_state(psci.PsciFn.CPU_ON_64)
    assert records.changes_state(0xC200_0000 | eemi.PmApi.REQ_NODE)
    assert records.changes_state(0xC200_0000 | eemi.PmApi.IOCTL)  # some IOCTLs write
    # SCFW (i.MX8): the queries are left out, a power mode change is not.
    assert sorted(f for f in READ_ONLY if f in SCFW_CALLS) == [
        0xC200_1204, 0xC200_1218, 0xC200_1305, 0xC200_130D, 0xC200_1321,
    ]  # fmt: skip
    assert records.changes_state(0xC200_1203)  # set_resource_power_mode
    assert not records.changes_state(0x8600_0000)  # unknown owner: NOT_SUPPORTED


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    before=st.integers(0, 200),
    smc64=st.booleans(),
    rest=st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 100), min_size=2, max_size=2),
)
def test_a_call_left_out_of_the_journal_changes_nothing(
    seed: int, before: int, smc64: bool, rest: list[int]
) -> None:
    mediator, clock = booted()
    rng = random.Random(seed)
    for _ in range(before):
        op(mediator, clock, rng)
    for domain in DOMAINS:  # hold what the domains own, so that a release would bite
        for device in BOARD.devices:
            # EEMI packs two 32-bit words per register: node | caps, QoS | ack.
            pm_args = [device.node_id | 1 << 32, 100 | 1 << 32]
            mediator.call(domain, 0, 0xC200_0000 | eemi.PmApi.REQ_NODE, pm_args)
    state = mediator.save_state()
    # Every left-out function, from every vCPU, naming every node of the board.
    for fid in READ_ONLY:
        for node in (d.node_id for d in BOARD.devices):
            for domain, vcpus in DOMAINS.items():
                for vcpu in range(vcpus):
                    x = [node | (rest[0] & ~0xFFFF_FFFF), *rest[1:]]
                    mediator.call(domain, vcpu, fid | (smccc.SMC64_BIT if smc64 else 0), x)
    assert mediator.save_state() == state


def test_replay_repeats_the_journalled_operations_exactly() -> None:
    mediator, clock = booted()
    journal = []
    rng = random.Random(4)
    for _ in range(300):
        domain = rng.choice(list(DOMAINS))
        vcpu = rng.randrange(DOMAINS[domain])
        fid = rng.choice([0xC400_0003, 0x8400_0002, 0xC400_000E, 0xC200_000D, 0xC200_000E])
        args = [rng.randrange(3), rng.choice([0x4000_1000, 22, 34, 40]), 1]
        now = clock.tick()
        outcome = mediator.call(domain, vcpu, fid, args)
        if isinstance(outcome, Returned):
            journal.append(records.call(now, domain, vcpu, fid, args, x0=outcome.regs[0]))
        elif not hasattr(outcome, "reason"):
            journal.append(records.call(now, domain, vcpu, fid, args, x0=None))
        if rng.random() < 0.1:
            irq = rng.choice([27, 53, 54, 97])
            now = clock.tick()
            raised = mediator.raise_interrupt(irq, domain, vcpu)
            if hasattr(raised, "outcome"):
                journal.append(
                    records.raise_interrupt(now, irq, domain, vcpu, raised.outcome.value)
                )
        clock.advance(rng.randrange(10**9))
    copy, copy_clock = booted()
    for kind, body in journal:
        records.replay(copy, copy_clock, kind, body)
    assert copy.save_state() == mediator.save_state()

    # A record whose answer differs from the replay's stops it, naming the record.
    kind, body = next(r for r in reversed(journal) if r[0] == records.CALL)
    fields = json.loads(body)
    fields[-1] = 12345  # an answer the call never gives
    tampered = json.dumps(fields).encode()
    journal = journal[: journal.index((kind, body)) + 1]
    fresh, fresh_clock = booted()
    for k, b in journal[:-1]:
        records.replay(fresh, fresh_clock, k, b)
    with pytest.raises(records.ReplayError, match="when it was recorded"):
        records.replay(fresh, fresh_clock, kind, tampered)


def test_time_going_backwards_in_the_journal_is_refused() -> None:
    mediator, clock = booted()
    clock.advance(1000)
    kind, body = records.inject_fault(5, "save_gic", 1, 0)
    with pytest.raises(records.ReplayError, match="earlier than the one before it"):
        records.replay(mediator, clock, kind, body)
