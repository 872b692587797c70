"""Prometheus metrics: gRPC server metrics (counted by :mod:`mediatord.server.gate`) and
the mediator's own.

Every label value comes from a closed set: function and API names of the specs
(anything else is "other"), result and status names, step names of the step
tables, device names of the board, states. Nothing a guest sends becomes a label.
Gauges of state are computed at scrape time from the engine, never kept twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mediatord.core import effects as fx
from mediatord.core.eemi import PmApi, PmStatus
from mediatord.core.mediator import Refused
from mediatord.core.model import DomainState, HostState, SuspendPolicy, VcpuPower
from mediatord.core.psci import PsciFn, PsciRet
from mediatord.core.smccc import SMCCC_ARCH_FEATURES, SMCCC_VERSION, to_signed

if TYPE_CHECKING:
    from mediatord.server.engine import Engine

FUNCTION_NAMES: Final = {
    **{int(f): f.name for f in PsciFn},
    SMCCC_VERSION: "SMCCC_VERSION",
    SMCCC_ARCH_FEATURES: "SMCCC_ARCH_FEATURES",
}
RESULT_NAMES: Final = {int(r): r.name for r in PsciRet}
API_NAMES: Final = {int(a): a.name for a in PmApi}
STATUS_NAMES: Final = {int(s): s.name for s in PmStatus}
# Modelled step latencies run from microseconds to milliseconds; host suspend and
# resume from milliseconds to a second; RPCs from tens of microseconds up.
STEP_BUCKETS: Final = (
    1e-6,
    1e-5,
    1e-4,
    5e-4,
    1e-3,
    5e-3,
    1e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# The *_created series double every counter's exposition and no alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

RPC_BUCKETS: Final = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.05, 0.1, 1.0, 10.0)


class Metrics:
    """All the daemon's metrics, on their own registry (one per server)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=r
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC (for streams: until the stream ends).",
            labels,
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.psci = Counter(
            "mediatord_psci_calls_total",
            "Guest SMC calls (PSCI and SMCCC) by function and result.",
            ("function", "result"),
            registry=r,
        )
        self.eemi = Counter(
            "mediatord_eemi_calls_total",
            "EEMI calls by API, mediation verdict and firmware status.",
            ("api", "verdict", "status"),
            registry=r,
        )
        self.denials = Counter(
            "mediatord_auth_denials_total",
            "RPCs refused by identity or authorization, by RPC and status code.",
            ("grpc_method", "grpc_code"),
            registry=r,
        )
        self.host_suspends = Counter(
            "mediatord_host_suspends_total",
            "Host suspends attempted by the hardware domain, by result.",
            ("result",),
            registry=r,
        )
        self.host_resumes = Counter(
            "mediatord_host_resumes_total", "Host resumes after a wake interrupt.", registry=r
        )
        self.step_seconds = Histogram(
            "mediatord_host_step_duration_seconds",
            "Duration of each host suspend / rollback / resume step (the daemon's clock).",
            ("phase", "step"),
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.suspend_seconds = Histogram(
            "mediatord_host_suspend_duration_seconds",
            "From the hardware domain's SYSTEM_SUSPEND to the SoC suspended.",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.resume_seconds = Histogram(
            "mediatord_host_resume_duration_seconds",
            "From the wake interrupt to the hardware domain running again.",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.wakeups = Counter(
            "mediatord_wakeups_total",
            "Interrupts that woke a domain or the host, by source (device or vtimer).",
            ("source", "target"),
            registry=r,
        )
        self.faults = Counter(
            "mediatord_backend_faults_total",
            "Injected faults that made a step or a hardware operation fail.",
            ("step",),
            registry=r,
        )
        self.journal_commit_seconds = Histogram(
            "mediatord_journal_commit_seconds",
            "Time to make one batch of journal records durable (one fsync).",
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.journal_records = Counter(
            "mediatord_journal_records_total",
            "Records written to the journal (accepted state changes and delivery marks).",
            registry=r,
        )
        self.journal_snapshots = Counter(
            "mediatord_journal_snapshots_total", "Snapshots written (compactions).", registry=r
        )
        self.journal_damage = Counter(
            "mediatord_journal_damage_total",
            "Damaged journal data found at start (torn WAL tail, failing checksums).",
            ("where",),
            registry=r,
        )
        for where in ("wal", "records"):  # at 0 from the start: an alert sees the first one
            self.journal_damage.labels(where)
        self.suspend_requests = Counter(
            "mediatord_system_suspend_requests_total",
            "Coordinated system suspend requests, by policy and outcome (ready, vetoed, deadline).",
            ("policy", "outcome"),
            registry=r,
        )
        outcomes = (
            fx.CoordinationOutcome.READY,
            fx.CoordinationOutcome.VETOED,
            fx.CoordinationOutcome.DEADLINE,
        )
        for policy in SuspendPolicy:
            for outcome in outcomes:
                self.suspend_requests.labels(policy.value, outcome.value)
        self._psci_children: dict[tuple[int, str], Any] = {}

    # ---- hot path: one dict lookup and an increment per call

    def psci_call(self, function_id: int, outcome: tuple[int, ...] | Refused | object) -> None:
        if function_id & 0x3F00_0000 == 0x0200_0000:
            return  # SiP: EEMI, counted per API in mediatord_eemi_calls_total
        if isinstance(outcome, tuple):
            result = RESULT_NAMES.get(to_signed(outcome[0]), "VALUE")
        elif isinstance(outcome, Refused):
            result = f"REFUSED_{outcome.reason.name}"
        else:
            result = "ABORTED"
        key = (function_id, result)
        child = self._psci_children.get(key)
        if child is None:
            name = FUNCTION_NAMES.get(function_id, "other")
            child = self._psci_children[key] = self.psci.labels(name, result)
        child.inc()

    def effect(self, effect: fx.Effect) -> None:
        match effect:
            case fx.FirmwareCall() if effect.firmware == "eemi":
                self.eemi.labels(
                    API_NAMES.get(effect.api, "other"),
                    effect.verdict,
                    STATUS_NAMES.get(effect.status, "other"),
                ).inc()
            case fx.HostStep():
                seconds = (effect.end_ns - effect.start_ns) / 1e9
                self.step_seconds.labels(effect.phase, effect.name).observe(seconds)
                if effect.injected:
                    self.faults.labels(effect.name).inc()
            case fx.HardwareStep():
                if effect.result and "(injected fault)" in effect.detail:
                    self.faults.labels(effect.name).inc()

    def host_suspend(self, ok: bool, span: tuple[int, int] | None) -> None:
        self.host_suspends.labels("success" if ok else "failure").inc()
        if ok and span is not None:
            self.suspend_seconds.observe((span[1] - span[0]) / 1e9)

    def suspend_coordinated(self, policy: str, outcome: str) -> None:
        self.suspend_requests.labels(policy, outcome).inc()

    def wakeup(self, source: str, target: str) -> None:
        self.wakeups.labels(source, target).inc()

    def host_resume(self, span: tuple[int, int] | None) -> None:
        self.host_resumes.inc()
        if span is not None:
            self.resume_seconds.observe((span[1] - span[0]) / 1e9)


class StateCollector(Collector):
    """Gauges read from the engine at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        system = self.engine.mediator.system
        domains = GaugeMetricFamily("mediatord_domains", "Domains by state.", labels=["state"])
        for state in DomainState:
            count = sum(d.state is state for d in system.domains.values())
            domains.add_metric([state.value], count)
        yield domains
        vcpus = GaugeMetricFamily("mediatord_vcpus", "vCPUs by power state.", labels=["state"])
        for power in VcpuPower:
            count = sum(v.power is power for d in system.domains.values() for v in d.vcpus)
            vcpus.add_metric([power.value], count)
        yield vcpus
        host = GaugeMetricFamily(
            "mediatord_host_state", "1 for the host's current state.", labels=["state"]
        )
        for host_state in HostState:
            host.add_metric([host_state.value], 1 if system.host_state is host_state else 0)
        yield host
        yield GaugeMetricFamily(
            "mediatord_inflight_calls",
            "Guest calls in the daemon now (waiting or blocked in CPU_SUSPEND).",
            value=sum(self.engine.inflight.values()),
        )
        yield GaugeMetricFamily(
            "mediatord_event_backlog",
            "VcpuEvents waiting for their domain's Attach stream (not yet handed to one).",
            value=sum(m.backlog() for m in self.engine.mailboxes.values()),
        )
        yield GaugeMetricFamily(
            "mediatord_event_watchers", "Open WatchEvents streams.", value=len(self.engine.watchers)
        )
