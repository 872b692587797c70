"""Journal snapshots: the whole state (core and emulated hardware) survives an
encode/decode round trip exactly, and a restored mediator behaves as the original."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_workload import BOARD, canonical, op

from mediatord.backends import create_platform
from mediatord.core import statecodec
from mediatord.core.clock import ManualClock
from mediatord.core.mediator import Mediator
from mediatord.core.model import VcpuPower


def booted() -> tuple[Mediator, ManualClock]:
    clock = ManualClock()
    mediator, _ = Mediator.boot(BOARD, create_platform(BOARD, clock))
    return mediator, clock


def restored(data: statecodec.Json, now_ns: int) -> tuple[Mediator, ManualClock]:
    # Booting advanced the new clock by the modelled boot time; bring it to the
    # original's time, as the journal's replay does with the recorded times.
    mediator, clock = booted()
    clock.advance(now_ns - clock.now_ns())
    mediator.load_state(json.loads(json.dumps(data)))
    return mediator, clock


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), before=st.integers(0, 300))
def test_a_restored_mediator_is_the_same_and_behaves_the_same(seed: int, before: int) -> None:
    original, clock = booted()
    rng = random.Random(seed)
    for _ in range(before):
        op(original, clock, rng)
    data = original.save_state()
    copy, copy_clock = restored(data, clock.now_ns())
    assert copy.save_state() == data
    assert copy.snapshot() == original.snapshot()
    # The same inputs from here on give the same outcomes and the same state:
    # the hardware (GIC, PMU, timer) came back too, not only the core.
    rng_copy = random.Random(seed + 1)
    rng = random.Random(seed + 1)
    for _ in range(150):
        assert canonical(op(copy, copy_clock, rng_copy)) == canonical(op(original, clock, rng))
    assert copy.save_state() == original.save_state()


def test_the_encoding_does_not_depend_on_set_order() -> None:
    # Sets are sorted by their encoding: equal states give equal bytes.
    assert statecodec.encode({3, 1, 2}) == statecodec.encode({2, 3, 1}) == ["s", 1, 2, 3]
    assert statecodec.encode(frozenset({("a", 1), ("b", 0)}))[0] == "f"


def test_a_suspended_host_is_restored_with_its_saved_contexts() -> None:
    mediator, clock = booted()
    for domain in ("domu1", "domu2"):
        d = mediator.system.domain(domain)
        assert d is not None
        mediator.call(domain, 0, 0xC400_000E, [d.ram_base + 0x1000, 7])  # SYSTEM_SUSPEND
    dom0 = mediator.system.domain("dom0")
    assert dom0 is not None
    mediator.call("dom0", 0, 0xC400_000E, [dom0.ram_base + 0x1000, 9])
    assert mediator.system.host_suspend is not None
    data = mediator.save_state()
    copy, _ = restored(data, clock.now_ns())
    assert copy.system.host_suspend == mediator.system.host_suspend
    # The UART's wake interrupt resumes the restored host exactly as the original.
    uart = BOARD.devices[0]
    woken = [m.raise_interrupt(uart.irq) for m in (mediator, copy)]
    assert canonical(woken[0]) == canonical(woken[1])
    assert copy.save_state() == mediator.save_state()
    assert copy.system.domains[0].vcpus[0].power is VcpuPower.ON


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace('"context_id"', '"ctx_id"'), "fields missing: context_id"),
        (lambda s: s.replace('"Vcpu"', '"Os"'), "class Os may not appear"),
        (lambda s: s.replace('["e","VcpuPower","on"]', '["e","VcpuPower","warm"]'), "no member"),
        (lambda s: s.replace('["l",', '["q",', 1), "unknown tag 'q'"),
    ],
)
def test_data_from_another_version_is_refused_with_the_reason(mutate, message) -> None:  # type: ignore[no-untyped-def]
    mediator, _ = booted()
    text = json.dumps(mediator.save_state(), separators=(",", ":"))
    changed = mutate(text)
    assert changed != text
    fresh, _ = booted()
    with pytest.raises(statecodec.CodecError, match=message):
        fresh.load_state(json.loads(changed))


def test_only_named_classes_are_built() -> None:
    decoder = statecodec.Decoder(())
    with pytest.raises(statecodec.CodecError, match="may not appear"):
        decoder.decode(["c", "System", {}])
    with pytest.raises(statecodec.CodecError, match="cannot encode"):
        statecodec.encode(object())
