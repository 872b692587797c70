"""A domain's mailbox (the engine's side of Attach): what stays until acknowledged.

An event handed to a stream can still be lost: it sits in the transport when the
connection breaks. An agent that attaches again with the last seq it received must
then get every later event exactly once; one that says nothing acknowledges each
event as the stream takes it (the rule before acknowledgements existed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediatord.core import effects as fx
from mediatord.server import engine
from mediatord.server.engine import Mailbox


def _event(seq: int) -> fx.DomainEvent:
    return fx.DomainEvent(1, "domu1", seq, 0, fx.Wake(27))


async def _take(stream: AsyncIterator[fx.DomainEvent], count: int) -> list[int]:
    return [(await anext(stream)).seq for _ in range(count)]


async def test_an_acknowledging_reader_gets_again_what_it_was_handed_and_did_not_acknowledge() -> (
    None
):
    box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3, 4)])
    first = box.follow(box.take_over(None, acking=True))
    assert await _take(first, 3) == [1, 2, 3]
    # 1 and 2 were handed (the stream asked for more after them); 3 is being written.
    assert box.waiting() == 2
    assert len(box.events) == 4
    assert box.acked == 0
    await first.aclose()  # the connection broke: 2 and 3 never arrived
    second = box.follow(box.take_over(1, acking=True))
    assert box.acked == 1
    assert [e.seq for e in box.events] == [2, 3, 4]
    assert await _take(second, 3) == [2, 3, 4]
    await second.aclose()


async def test_a_new_agent_acknowledges_what_earlier_readers_were_handed() -> None:
    box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3)])
    first = box.follow(box.take_over(None, acking=True))
    assert await _take(first, 2) == [1, 2]
    await first.aclose()  # 1 handed, 2 still being written
    # Another agent process ("none"): 1 was its predecessor's, 2 may not have been.
    second = box.follow(box.take_over(None, acking=True))
    assert box.acked == 1
    assert await _take(second, 2) == [2, 3]
    await second.aclose()


async def test_a_reader_that_says_nothing_acknowledges_as_it_reads() -> None:
    box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3)])
    first = box.follow(box.take_over(None, acking=False))
    assert await _take(first, 2) == [1, 2]
    assert box.acked == 1
    assert [e.seq for e in box.events] == [2, 3]
    await first.aclose()
    # The event being written when it stopped (2) goes again: at least once.
    second = box.follow(box.take_over(None, acking=False))
    assert await _take(second, 2) == [2, 3]
    await second.aclose()


async def test_a_superseded_reader_does_not_move_the_new_ones_place() -> None:
    box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3)])
    old = box.follow(box.take_over(None, acking=True))
    assert await _take(old, 1) == [1]
    new = box.follow(box.take_over(None, acking=True))
    # The old stream's write of 1 completes after the takeover: it just ends.
    with pytest.raises(StopAsyncIteration):
        await anext(old)
    assert await _take(new, 3) == [1, 2, 3]
    await new.aclose()


def test_events_a_stream_wrote_are_forgotten_past_the_limit_not_counted_as_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "MAILBOX_LIMIT", 3)

    async def scenario() -> None:
        box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3)])
        reader = box.follow(box.take_over(None, acking=True))
        await _take(reader, 3)
        await _take_nothing_more(reader, box)
        assert box.handed_seq == 3
        assert box.backlog() == 0
        box.put(_event(4))  # 1 and 2 were written: they make room silently
        box.put(_event(5))
        assert box.dropped == 0
        assert [e.seq for e in box.events] == [3, 4, 5]
        await reader.aclose()
        box.take_over(None, acking=True)  # a new agent: 3 was its predecessor's
        box.put(_event(6))
        box.put(_event(7))  # 4 was never written to any stream: lost, and counted
        assert box.dropped == 1
        assert [e.seq for e in box.events] == [5, 6, 7]
        assert box.last_seq == 7

    asyncio.run(scenario())


def test_evicting_the_event_being_written_skips_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MAILBOX_LIMIT", 3)

    async def scenario() -> None:
        box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3)])
        reader = box.follow(box.take_over(None, acking=True))
        assert await _take(reader, 1) == [1]  # 1 is being written
        box.put(_event(4))  # evicts 1: written (or being written), not dropped
        assert box.dropped == 0
        assert await _take(reader, 3) == [2, 3, 4]
        await reader.aclose()

    asyncio.run(scenario())


async def test_after_a_restart_a_new_agent_gets_only_what_no_stream_wrote() -> None:
    """The mailbox as recovery rebuilds it: events not acknowledged, 1-3 of them
    written to the last agent's stream before the daemon stopped."""
    box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2, 3, 4)], handed_seq=3)
    assert box.backlog() == 1
    new = box.follow(box.take_over(None, acking=True))
    assert await _take(new, 1) == [4]
    await new.aclose()


async def test_an_agent_that_has_nothing_acknowledges_nothing() -> None:
    """``x-mediator-last-event: 0``: its first Attach broke before it learnt the
    stream, so even what that stream wrote must come again."""
    box = Mailbox(1, "domu1", "h.1", [_event(s) for s in (1, 2)], handed_seq=2)
    again = box.follow(box.take_over(0, acking=True))
    assert await _take(again, 2) == [1, 2]
    await again.aclose()


async def _take_nothing_more(reader: AsyncIterator[fx.DomainEvent], box: Mailbox) -> None:
    """Let the reader finish handing its last event, then wait for the next one."""
    waiting = asyncio.ensure_future(anext(reader))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


# An operation on the mailbox and its agent: a new event; the stream taking COUNT
# events of which the first LOST_FROM reach the agent (None: all); the agent
# attaching again (saying what it has, or not).
Op = tuple[str, int, int | None]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 5), st.none()),
        st.tuples(st.just("read"), st.integers(1, 6), st.none() | st.integers(0, 5)),
        st.tuples(st.just("attach"), st.just(0), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_an_acknowledging_agent_gets_every_event_exactly_once_in_order(ops: list[Op]) -> None:
    """Whatever is lost in flight and whenever the agent reconnects, the events it
    receives are 1, 2, 3, ... without a repeat, and after a last Attach nothing is
    missing."""

    async def scenario() -> list[int]:
        box = Mailbox(1, "domu1", "h.1")
        made = 0
        received: list[int] = []
        stream = box.follow(box.take_over(None, acking=True))
        broken = False  # what the stream sends now is lost (its connection broke)
        # The stream's last event is still being written (it counts as handed only
        # when the stream asks for the next).
        writing = False

        async def reattach() -> None:
            nonlocal stream, broken, writing
            await stream.aclose()
            stream = box.follow(box.take_over(received[-1] if received else 0, acking=True))
            broken = writing = False

        for kind, count, lost_from in ops:
            if kind == "put":
                for _ in range(count):
                    made += 1
                    box.put(_event(made))
            elif kind == "read":
                for i in range(min(count, box.waiting() - writing)):
                    seq = (await anext(stream)).seq
                    writing = True
                    broken = broken or (lost_from is not None and i >= lost_from)
                    if not broken:
                        received.append(seq)
            else:
                await reattach()
        await reattach()
        received.extend(await _take(stream, box.waiting()))
        await stream.aclose()
        assert received == list(range(1, made + 1))
        return received

    asyncio.run(scenario())
