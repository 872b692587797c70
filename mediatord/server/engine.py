"""The single writer between the gRPC services and the core.

Every change to the system goes through an :class:`Engine` method. They run on
the event-loop thread and call the core synchronously, without awaiting in
between, so no two operations ever interleave: the event loop is the writer's
lock. The engine then applies the effects the core returned: it numbers nothing
(the core did), it only delivers — VcpuEvents into each domain's mailbox for its
Attach stream, results to calls blocked in CPU_SUSPEND, and a log line per
state change.

With a journal, an operation that changed state is logged as a record
(:mod:`mediatord.core.records`), and its answer and its effects are held until
the record is durable (:class:`mediatord.server.journaling.GroupCommit`). No
answer, event or read shows a change that a crash could still take back: a read
waits for the records before it too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from mediatord import logs
from mediatord.core import effects as fx
from mediatord.core import records
from mediatord.core.config import DomainConfig
from mediatord.core.eemi import PmApi
from mediatord.core.effects import Effect, Regs
from mediatord.core.mediator import (
    NOT_SUPPORTED_OUTCOME,
    Blocked,
    Changed,
    Created,
    Destroyed,
    IrqOutcome,
    Mediator,
    Raised,
    Refusal,
    Refused,
    Returned,
)
from mediatord.core.model import HARDWARE_DOMAIN_ID, VTIMER_PPI, SuspendPolicy
from mediatord.server.journaling import (
    GroupCommit,
    JournalWriteError,
    Mailboxes,
    encode_snapshot,
    fold_mailboxes,
    new_history,
)
from mediatord.server.metrics import Metrics

# Events kept for a domain whose agent is not attached. Beyond this the oldest
# are dropped (and counted); the agent sees the gap in the sequence numbers.
MAILBOX_LIMIT: Final = 4096
# A WatchEvents client this far behind is cut off rather than buffered forever.
WATCH_LIMIT: Final = 65536
# Guest calls of one domain in the daemon at once (waiting for the loop or
# blocked in CPU_SUSPEND); past this a domain gets RESOURCE_EXHAUSTED, not memory.
MAX_INFLIGHT_PER_DOMAIN: Final = 256
# The longest a blocked call (standby CPU_SUSPEND) is held without a client deadline.
MAX_BLOCK_SECONDS: Final = 3600.0

log = logs.get("mediatord.engine")
_Op = TypeVar("_Op", Created, Destroyed, Changed, Raised)
_View = TypeVar("_View")


def eemi_name(api: int) -> str:
    try:
        return PmApi(api).name
    except ValueError:
        return f"{api:#x}"


@dataclass(frozen=True, slots=True)
class Aborted:
    """A blocked call that will never return (its domain shut down or went away)."""

    reason: str


class Mailbox:
    """The VcpuEvents of one domain, waiting for (or streaming to) its Attach.

    One Attach reads at a time; a newer Attach takes over from an older one.
    An event handed to a stream may still be lost in the transport when the
    connection breaks, so an agent that keeps track of what it received says so
    (docs/architecture.md, "Attach: a mailbox per domain"): its first Attach
    carries ``x-mediator-last-event: none``, an Attach again before it learnt the
    stream ``0``, and each later one ``STREAM/SEQ``, acknowledging every event up
    to SEQ of the numbering STREAM (this mailbox's ``stream_id``, sent in the
    Attach's initial metadata). The events it was handed beyond SEQ are sent
    again. A new agent (``none``, or another numbering) acknowledges what earlier
    readers were handed; an Attach without the header acknowledges each event as
    its stream takes it (an agent that keeps no sequence numbers cannot say more).

    The events are those not acknowledged, in order and with consecutive seqs
    (events only ever leave from the front), so a reader's place is a seq.
    """

    def __init__(
        self,
        domain_id: int,
        name: str,
        stream_id: str,
        events: Iterable[fx.DomainEvent] = (),
        *,
        last_seq: int = 0,
        handed_seq: int = 0,
    ) -> None:
        self.domain_id = domain_id
        self.name = name
        self.stream_id = stream_id
        self.events: deque[fx.DomainEvent] = deque(events)
        # The highest seq acknowledged, and the highest a stream finished writing
        # (both journalled now and then as a `delivered` mark: a restart neither
        # sends the first again nor gives the second to a new agent).
        self.acked = self.events[0].seq - 1 if self.events else last_seq
        self.handed_seq = max(handed_seq, self.acked)
        # The domain's newest event: no agent can have received beyond it.
        self.last_seq = max(last_seq, self.events[-1].seq if self.events else 0)
        self.dropped = 0
        self.closed: str | None = None
        # Closed because the server stops, not because the domain went away.
        self.shutting_down = False
        self._generation = 0
        self._acking = False  # the current reader acknowledges by seq
        self._cursor = self.acked  # the current reader has been given every seq up to this
        self._writing = 0  # the seq a stream is writing now (0: none)
        self._ready = asyncio.Event()

    def put(self, event: fx.DomainEvent) -> None:
        if len(self.events) >= MAILBOX_LIMIT:
            oldest = self.events.popleft()
            # One a stream wrote (or is writing) is forgotten, not lost.
            if oldest.seq > self.handed_seq and oldest.seq != self._writing:
                self.dropped += 1
                log.warning("event dropped", domain=self.name, dropped=self.dropped)
        self.events.append(event)
        self.last_seq = event.seq
        self._ready.set()

    def backlog(self) -> int:
        """Events no stream has written yet (the event backlog gauge)."""
        return self._after(self.handed_seq)

    def waiting(self) -> int:
        """Events the current reader has not been given yet."""
        return self._after(self._cursor)

    def _after(self, seq: int) -> int:
        if not self.events:
            return 0
        return max(0, self.events[-1].seq - max(seq, self.events[0].seq - 1))

    def close(self, reason: str, shutting_down: bool = False) -> None:
        self.closed = reason
        self.shutting_down = shutting_down
        self._ready.set()

    def take_over(self, acked: int | None, acking: bool) -> int:
        """Start a new reader; the previous one (if any) stops at its next event.
        ``acked``: the seq up to which the new reader's agent has every event of
        this stream (None: a new agent, which has none of what earlier readers
        were handed). ``acking``: whether it will acknowledge by seq when it
        attaches again (else each event is acknowledged as the stream takes it)."""
        self._generation += 1
        self._acknowledge(self.handed_seq if acked is None else acked)
        self._acking = acking or acked is not None
        # Whatever was handed beyond what is acknowledged goes again.
        self._cursor = self.acked
        self._ready.set()
        return self._generation

    def superseded(self, generation: int) -> bool:
        return generation != self._generation

    def _acknowledge(self, seq: int) -> None:
        events = self.events
        while events and events[0].seq <= seq:
            events.popleft()
        self.acked = max(self.acked, seq)

    async def follow(self, generation: int) -> AsyncIterator[fx.DomainEvent]:
        """Yield events in order until the mailbox closes or a newer reader takes over."""
        events = self.events
        while True:
            if self.superseded(generation) or self.closed is not None:
                return
            if not events or events[-1].seq <= self._cursor:
                self._ready.clear()
                await self._ready.wait()
                continue
            # Past an eviction the next event is the oldest kept (the agent sees the gap).
            event = events[max(0, self._cursor + 1 - events[0].seq)]
            self._writing = event.seq
            try:
                yield event
            finally:
                self._writing = 0
            if self.superseded(generation):
                return  # the newer reader starts from what is acknowledged: it sends it again
            self._cursor = event.seq
            self.handed_seq = max(self.handed_seq, event.seq)
            if not self._acking:
                self._acknowledge(event.seq)


@dataclass(frozen=True, slots=True)
class Watched:
    """One state change as WatchEvents streams it."""

    seq: int
    time_ns: int
    effect: Effect


class Watcher:
    """One WatchEvents stream: every state change from the moment it started."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Watched | None] = asyncio.Queue()
        self.overflowed = False

    def put(self, item: Watched) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= WATCH_LIMIT:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(item)

    def close(self) -> None:
        self.queue.put_nowait(None)


def _ends_a_request(effects: tuple[Effect, ...]) -> bool:
    """Whether a call ended a coordinated suspend: journalled whatever its function
    (the core ends requests only on changes, but a replay must see every end)."""
    return any(type(e) is fx.SuspendCoordinated for e in effects)


class Engine:
    """Owns the :class:`Mediator` for a running server and delivers its effects."""

    def __init__(
        self,
        mediator: Mediator,
        boot_effects: Iterable[Effect] = (),
        metrics: Metrics | None = None,
        *,
        mailboxes: Mailboxes | None = None,
        history: str = "",
        handed: Mapping[int, int] | None = None,
    ) -> None:
        """``mailboxes``: the queued events of a recovered state (instead of the
        boot effects of a fresh one), and ``handed`` the highest seq of each
        domain a stream had written. ``history``: what names this numbering of
        events (the journal's; a daemon without one numbers afresh each start)."""
        self.mediator = mediator
        self.history = history or new_history()
        self.clock = mediator.clock
        self.metrics = metrics or Metrics()
        self.mailboxes: dict[int, Mailbox] = {}
        self._by_name: dict[str, Mailbox] = {}
        self.watchers: set[Watcher] = set()
        # Guest calls in the daemon by domain; a domain with none has no entry. A
        # plain dict, not a Counter: a count drops to zero after nearly every call,
        # and Counter's __missing__ and __delitem__ are Python functions.
        self.inflight: dict[str, int] = {}
        self.journal: GroupCommit | None = None
        self._watch_seq = 0
        self._blocked: dict[tuple[int, int], asyncio.Future[Regs | Aborted]] = {}
        # Effects of logged operations, waiting for their record to be durable, with
        # the context of the RPC that caused them (its log fields: request id, rpc).
        self._held: deque[tuple[int, tuple[Effect, ...], contextvars.Context]] = deque()
        # The (acknowledged, handed) seqs of each domain as last journalled.
        self._marked: dict[int, tuple[int, int]] = {}
        # Coordinated suspend requests by number: their answers and deadline timers.
        # (A request may end in the core and a new one begin before the first's
        # outcome is durable: each keeps its own.)
        self._coordinations: dict[int, asyncio.Future[fx.SuspendCoordinated]] = {}
        self._deadlines: dict[int, asyncio.TimerHandle] = {}
        if mailboxes is None:
            self._apply(boot_effects)
        else:
            domains = mediator.system.domains
            for domain_id, (name, events) in mailboxes.items():
                box = self.mailboxes[domain_id] = Mailbox(
                    domain_id,
                    name,
                    self._stream_id(domain_id),
                    events,
                    last_seq=domains[domain_id].event_seq,
                    handed_seq=(handed or {}).get(domain_id, 0),
                )
                self._by_name[name] = box
                self._marked[domain_id] = (box.acked, box.handed_seq)

    def _stream_id(self, domain_id: int) -> str:
        # Domain ids are never reused, so this names one incarnation's numbering.
        return f"{self.history}.{domain_id}"

    # -------------------------------------------------------------- journal

    def use_journal(self, journal: GroupCommit) -> None:
        self.journal = journal

    def snapshot(self) -> bytes:
        """The state as of the last logged record, with every domain's queued events."""
        handed = {i: m.handed_seq for i, m in self.mailboxes.items()}
        return encode_snapshot(self.mediator, self.queued(), handed)

    def queued(self) -> Mailboxes:
        """Every domain's VcpuEvents not yet received by its agent, as of the last
        logged record (the events of records not yet durable included)."""
        boxes: Mailboxes = {
            i: (m.name, deque(m.events, maxlen=MAILBOX_LIMIT)) for i, m in self.mailboxes.items()
        }
        for _, effects, _ in self._held:
            fold_mailboxes(boxes, effects, MAILBOX_LIMIT)
        return boxes

    def delivery_marks(self) -> list[records.Record]:
        """A record of the events handed to agents since the last one (if any were)."""
        changed = {
            i: marks
            for i, m in self.mailboxes.items()
            if (marks := (m.acked, m.handed_seq)) != self._marked.get(i, (0, 0))
        }
        if not changed:
            return []
        self._marked.update(changed)
        return [records.delivered(changed)]

    def durable(self, seq: int) -> None:
        """Records up to ``seq`` are durable: deliver what their operations did."""
        held = self._held
        while held and held[0][0] <= seq:
            _, effects, context = held.popleft()
            context.run(self._apply, effects)

    def _accept(self, record: records.Record | None, effects: tuple[Effect, ...]) -> int:
        """An operation ran: log its record (None: it changed nothing) and deliver
        its effects, now or once durable. The record to wait for before answering."""
        journal = self.journal
        if journal is None:
            if effects:
                self._apply(effects)
            return 0
        seq = journal.appended if record is None else journal.log(record)
        if seq > journal.durable or self._held:
            if effects:
                self._held.append((seq, effects, contextvars.copy_context()))
        elif effects:
            self._apply(effects)
        return seq

    async def _settle(self, seq: int) -> Refused | None:
        journal = self.journal
        if journal is None or seq <= journal.durable:
            return None
        try:
            await journal.wait(seq)
        except JournalWriteError as failed:
            return Refused(Refusal.UNAVAILABLE, f"{failed}; the daemon is stopping")
        return None

    def _unavailable(self) -> Refused | None:
        """Refuse every change once the journal has failed: it could not be kept."""
        if self.journal is not None and self.journal.failed is not None:
            return Refused(Refusal.UNAVAILABLE, f"{self.journal.failed}; the daemon is stopping")
        return None

    async def view(self, read: Callable[[], _View]) -> _View | Refused:
        """A read: built now, answered once every change it may show is durable
        (building after the wait could show changes made during it)."""
        self.clock.tick()
        reply = read()
        return await self._settle(self._last_logged()) or reply

    # ---------------------------------------------------------------- guest

    async def call(
        self,
        domain: str,
        vcpu: int,
        function_id: int,
        args: Sequence[int],
        time_remaining: Callable[[], float | None] | None = None,
    ) -> Regs | Refused | Aborted:
        """Run one guest call; a standby CPU_SUSPEND waits here until an interrupt
        (or for what ``time_remaining()`` answers, the caller's deadline; at most
        MAX_BLOCK_SECONDS). It is asked only then: most calls never wait."""
        inflight = self.inflight
        calls = inflight.get(domain, 0)
        if calls >= MAX_INFLIGHT_PER_DOMAIN:
            return Refused(
                Refusal.RESOURCE_EXHAUSTED,
                f"{domain} has {MAX_INFLIGHT_PER_DOMAIN} calls in flight; wait for answers",
            )
        inflight[domain] = calls + 1
        try:
            result = await self._call(domain, vcpu, function_id, args, time_remaining)
            self.metrics.psci_call(function_id & 0xFFFF_FFFF, result)
            return result
        finally:
            calls = inflight[domain] - 1
            if calls:
                inflight[domain] = calls
            else:
                del inflight[domain]

    async def _call(
        self,
        domain: str,
        vcpu: int,
        function_id: int,
        args: Sequence[int],
        time_remaining: Callable[[], float | None] | None,
    ) -> Regs | Refused | Aborted:
        now = self.clock.tick()
        if self.journal is not None and (refused := self._unavailable()) is not None:
            return refused
        outcome = self.mediator.call(domain, vcpu, function_id, args)
        if type(outcome) is Returned:
            if self.journal is None:
                if outcome.effects:
                    self._apply(outcome.effects)
                return outcome.regs
            record = None
            # (NOT_SUPPORTED, e.g. any SiP call on a board without power firmware,
            # changed nothing whatever the function ID.)
            if outcome is not NOT_SUPPORTED_OUTCOME and (
                records.changes_state(function_id) or _ends_a_request(outcome.effects)
            ):
                record = records.call(now, domain, vcpu, function_id, args, x0=outcome.regs[0])
            seq = self._accept(record, outcome.effects)
            return await self._settle(seq) or outcome.regs
        if isinstance(outcome, Refused):
            # What a refusal says (a vCPU off, a domain suspended) may come from a
            # change still being written.
            if self.journal is not None:
                return await self._settle(self.journal.appended) or outcome
            return outcome
        assert isinstance(outcome, Blocked)
        waiter: asyncio.Future[Regs | Aborted] = asyncio.get_running_loop().create_future()
        domain_id = self.mediator.system.names[domain]
        self._blocked[(domain_id, vcpu)] = waiter
        # The vCPU's call is answered by a later operation (an interrupt), whose
        # effects are delivered only after its record, and so this one, is durable.
        self._accept(records.call(now, domain, vcpu, function_id, args, x0=None), outcome.effects)
        log.info("vcpu blocked", domain=domain, vcpu=vcpu, function=f"{function_id:#010x}")
        deadline_s = None if time_remaining is None else time_remaining()
        limit = MAX_BLOCK_SECONDS if deadline_s is None else min(deadline_s, MAX_BLOCK_SECONDS)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), limit)
        except TimeoutError:
            # The vCPU stays in standby; only this answer is given up (once what
            # it tells, the standby, is durable).
            if (refused := await self._settle(self._last_logged())) is not None:
                return refused
            return Refused(
                Refusal.DEADLINE_EXCEEDED,
                f"vCPU {vcpu} of {domain} is still in CPU_SUSPEND after {limit:.0f} s; "
                "its WAKE event will say when it runs again",
            )

    def _mailbox(self, domain: str) -> Mailbox | None:
        """A domain's mailbox by name. Mailboxes come and go with the delivery of
        DomainCreated / DomainDestroyed, i.e. once durable: this is the durable
        view of which domains exist, the one identity checks must use."""
        return self._by_name.get(domain)

    def attach(
        self, domain: str, last_event: tuple[str | None, int] | None = None, acking: bool = False
    ) -> tuple[Mailbox, int] | Refused:
        """Take over a domain's events (see :class:`Mailbox`). ``last_event``:
        (stream id, seq) of the last event the agent has; (None, 0): it has
        received nothing, not even the stream id. An agent whose stream id is not
        this domain's current one (the daemon started afresh without its journal,
        or the domain was destroyed and made again, or the journal lost records)
        is a new agent here. ``acking``: the agent acknowledges by seq (implied by
        ``last_event``)."""
        mailbox = self._mailbox(domain)
        if mailbox is None:
            return Refused(Refusal.UNKNOWN_DOMAIN, f"no domain named {domain!r}")
        acked = None
        if last_event is not None:
            acking = True
            stream_id, seq = last_event
            if stream_id is None:
                acked = 0  # acknowledges nothing
            elif stream_id != mailbox.stream_id:
                log.info(
                    "attached from another event stream",
                    domain=domain,
                    agent_stream=stream_id,
                    stream=mailbox.stream_id,
                )
            elif seq > mailbox.last_seq:
                return Refused(
                    Refusal.INVALID_ARGUMENT,
                    f"last event {seq} of stream {stream_id} is beyond {domain}'s newest "
                    f"event ({mailbox.last_seq})",
                )
            else:
                acked = seq
        generation = mailbox.take_over(acked, acking)
        log.info("attached", domain=domain, waiting=mailbox.waiting(), acked=acked)
        return mailbox, generation

    def shut_down(self) -> None:
        """End every Attach and WatchEvents stream (the server is stopping) and stop
        timing suspend requests (a restart re-arms an open one)."""
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        for mailbox in self.mailboxes.values():
            mailbox.close("the server is shutting down", shutting_down=True)
        for watcher in self.watchers:
            watcher.close()

    def watch(self) -> Watcher:
        watcher = Watcher()
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    async def inject_fault(self, step: str, count: int, error: int) -> Refused | None:
        def arm() -> Changed | Refused:
            return self.mediator.inject_fault(step, count, error) or Changed(())

        result = await self._operate(
            arm, lambda now, _: records.inject_fault(now, step, count, error)
        )
        if isinstance(result, Refused):
            return result
        log.warning("fault injected", step=step, count=count, error=error)
        return None

    def hardware_domain(self, name: str) -> bool | None:
        """Whether ``name`` is the hardware domain; None when no such domain exists
        (durably: see :meth:`_mailbox`)."""
        mailbox = self._mailbox(name)
        return None if mailbox is None else mailbox.domain_id == HARDWARE_DOMAIN_ID

    # -------------------------------------------------------------- control

    async def create_domain(self, config: DomainConfig) -> Created | Refused:
        return await self._operate(
            lambda: self.mediator.create_domain(config),
            lambda now, created: records.create_domain(now, config, created.domain.id),
        )

    async def destroy_domain(self, name: str) -> Destroyed | Refused:
        return await self._operate(
            lambda: self.mediator.destroy_domain(name),
            lambda now, _: records.destroy_domain(now, name),
        )

    async def assign_device(self, domain: str, device: str) -> Changed | Refused:
        return await self._operate(
            lambda: self.mediator.assign_device(domain, device),
            lambda now, _: records.device(now, True, domain, device),
        )

    async def release_device(self, domain: str, device: str) -> Changed | Refused:
        return await self._operate(
            lambda: self.mediator.release_device(domain, device),
            lambda now, _: records.device(now, False, domain, device),
        )

    async def raise_interrupt(self, irq: int, domain: str, vcpu: int) -> Raised | Refused:
        result = await self._operate(
            lambda: self.mediator.raise_interrupt(irq, domain, vcpu),
            lambda now, raised: records.raise_interrupt(
                now, irq, domain, vcpu, raised.outcome.value
            ),
        )
        if isinstance(result, Raised):
            source = self.mediator.system.irq_devices.get(
                irq, "vtimer" if irq == VTIMER_PPI else "other"
            )
            if result.woke_host:
                self.metrics.wakeup(source, "host")
            if result.outcome in (IrqOutcome.WOKE_DOMAIN, IrqOutcome.WOKE_VCPU):
                self.metrics.wakeup(source, result.outcome.value.removeprefix("woke-"))
            log.info(
                "interrupt",
                irq=irq,
                outcome=result.outcome.value,
                domain=result.domain,
                vcpu=result.vcpu,
                reason=result.reason or None,
            )
        return result

    async def _operate(
        self, run: Callable[[], _Op | Refused], record: Callable[[int, _Op], records.Record]
    ) -> _Op | Refused:
        """One Control operation: run it on the core, journal what it changed, and
        answer once that (or, for a refusal, everything before it) is durable: a
        refusal too can tell of a change (ALREADY_EXISTS of a domain just made)."""
        if (refused := self._unavailable()) is not None:
            return refused
        now = self.clock.tick()
        result = run()
        if isinstance(result, Refused):
            return await self._settle(self._last_logged()) or result
        return await self._settle(self._accept(record(now, result), result.effects)) or result

    def _last_logged(self) -> int:
        return 0 if self.journal is None else self.journal.appended

    # ---------------------------------------------------- coordinated suspend

    async def request_system_suspend(
        self, policy: SuspendPolicy, deadline_s: float, by_hardware_domain: bool
    ) -> fx.SuspendCoordinated | Refused:
        """Control.RequestSystemSuspend: answered when the request ends (every
        domU suspended, a veto, or the deadline; core/coordination.py)."""
        if (refused := self._unavailable()) is not None:
            return refused
        now = self.clock.tick()
        deadline_ns = round(deadline_s * 1e9)
        result = self.mediator.request_system_suspend(policy, deadline_ns, by_hardware_domain)
        if isinstance(result, Refused):
            return await self._settle(self._last_logged()) or result
        number = self.mediator.system.suspend_requests
        waiter: asyncio.Future[fx.SuspendCoordinated] = asyncio.get_running_loop().create_future()
        self._coordinations[number] = waiter
        self.arm_suspend_deadline()
        record = records.request_system_suspend(now, policy, deadline_ns, by_hardware_domain)
        if (refused := await self._settle(self._accept(record, result.effects))) is not None:
            return refused
        # Shielded: the request goes on if the caller gives up waiting.
        return await asyncio.shield(waiter)

    async def suspend_veto(self, domain: str, reason: str) -> Changed | Refused:
        result = await self._operate(
            lambda: self.mediator.suspend_veto(domain, reason),
            lambda now, _: records.suspend_veto(now, domain, reason),
        )
        if isinstance(result, Changed):
            log.info("suspend vetoed", domain=domain, reason=reason)
        return result

    def arm_suspend_deadline(self) -> None:
        """Time the open request (at start too: a restart recovers an open one)."""
        open_request = self.mediator.system.coordination
        if open_request is None:
            return
        remaining = max(0, open_request.deadline_ns - self.clock.now_ns()) / 1e9
        loop = asyncio.get_running_loop()
        number = open_request.request
        self._deadlines[number] = loop.call_later(remaining, self._expire, number)

    def _expire(self, number: int) -> None:
        self._deadlines.pop(number, None)
        open_request = self.mediator.system.coordination
        if open_request is None or open_request.request != number:
            return  # it ended before its deadline
        if self._unavailable() is not None:
            return
        now = self.clock.tick()
        result = self.mediator.expire_suspend_request()
        if isinstance(result, Changed):
            self._accept(records.expire_suspend_request(now), result.effects)

    # -------------------------------------------------------------- effects

    def _apply(self, effects: Iterable[Effect]) -> None:
        # The time stamp is only for watchers; most calls have none.
        now = self.mediator.clock.now_ns() if self.watchers else 0
        metrics = self.metrics
        for effect in effects:
            metrics.effect(effect)
            if self.watchers:
                self._watch_seq += 1
                item = Watched(self._watch_seq, now, effect)
                for watcher in self.watchers:
                    watcher.put(item)
            match effect:
                case fx.DomainEvent():
                    self.mailboxes[effect.domain_id].put(effect)
                    log.info(
                        "vcpu event",
                        domain=effect.domain,
                        vcpu=effect.vcpu,
                        seq=effect.seq,
                        kind=type(effect.kind).__name__.lower(),
                    )
                case fx.CallCompleted():
                    self._finish(effect.domain_id, effect.vcpu, effect.regs)
                case fx.CallAborted():
                    self._finish(effect.domain_id, effect.vcpu, Aborted(effect.reason))
                case fx.VcpuPowerChanged():
                    log.info(
                        "vcpu power",
                        domain=effect.domain,
                        vcpu=effect.vcpu,
                        power=effect.power.value,
                    )
                case fx.DomainStateChanged():
                    log.info("domain state", domain=effect.domain, state=effect.state.value)
                case fx.DomainCreated():
                    box = Mailbox(
                        effect.domain_id, effect.domain, self._stream_id(effect.domain_id)
                    )
                    self.mailboxes[effect.domain_id] = self._by_name[effect.domain] = box
                    log.info("domain created", domain=effect.domain, domain_id=effect.domain_id)
                case fx.DomainDestroyed():
                    mailbox = self.mailboxes.pop(effect.domain_id)
                    del self._by_name[mailbox.name]
                    self._marked.pop(effect.domain_id, None)
                    mailbox.close(f"domain {effect.domain} was destroyed")
                    log.info("domain destroyed", domain=effect.domain)
                case fx.HostStateChanged():
                    log.info("host state", state=effect.state.value)
                case fx.HostStep():
                    self._count_host(effect)
                    log.info(
                        "host step",
                        phase=effect.phase,
                        step=effect.name,
                        result=effect.result,
                        injected=effect.injected or None,
                        duration_ns=effect.end_ns - effect.start_ns,
                    )
                case fx.FirmwareCall():
                    level = log.info if effect.verdict in ("deny", "invalid") else log.debug
                    level(
                        f"{effect.firmware} call",
                        domain=effect.domain,
                        api=eemi_name(effect.api)
                        if effect.firmware == "eemi"
                        else f"{effect.api:#05x}",
                        verdict=effect.verdict,
                        status=effect.status,
                    )
                case fx.DeviceAssigned():
                    log.info(
                        "device assigned" if effect.assigned else "device released",
                        domain=effect.domain,
                        device=effect.device,
                    )
                case fx.SuspendCoordinated():
                    self._coordinated(effect)
                case fx.HardwareStep():
                    log.debug(
                        "hardware step",
                        step=effect.name,
                        detail=effect.detail,
                        result=effect.result,
                        duration_ns=effect.end_ns - effect.start_ns,
                    )

    def _coordinated(self, outcome: fx.SuspendCoordinated) -> None:
        timer = self._deadlines.pop(outcome.request, None)
        if timer is not None:
            timer.cancel()
        waiter = self._coordinations.pop(outcome.request, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
        self.metrics.suspend_coordinated(outcome.policy.value, outcome.outcome.value)
        (log.info if outcome.outcome is fx.CoordinationOutcome.READY else log.warning)(
            "system suspend coordinated",
            policy=outcome.policy.value,
            outcome=outcome.outcome.value,
            suspended=list(outcome.suspended),
            stragglers=list(outcome.stragglers),
            vetoed_by=outcome.vetoed_by or None,
            reason=outcome.reason or None,
        )

    def _count_host(self, step: fx.HostStep) -> None:
        system = self.mediator.system
        if step.phase == "suspend" and step.result:
            self.metrics.host_suspend(False, None)
        elif step.phase == "suspend" and step.name == "el3_system_suspend":
            self.metrics.host_suspend(True, system.last_suspend_ns)
        elif step.phase == "resume" and step.name == "resume_hardware_domain":
            self.metrics.host_resume(system.last_resume_ns)

    def _finish(self, domain_id: int, vcpu: int, result: Regs | Aborted) -> None:
        waiter = self._blocked.pop((domain_id, vcpu), None)
        # The RPC may have been cancelled meanwhile; the vCPU still woke.
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
