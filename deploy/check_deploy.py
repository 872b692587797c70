"""The live half of `make check-deploy`: a real daemon, a workload, its /metrics.

1. starts ``mediatord serve --unix <tmp> --metrics-listen 127.0.0.1:0 --state-dir <tmp>/state
   --log-format json``
   (port 0: the daemon picks a free port and prints it);
2. runs deploy/healthcheck.py against it (the container's probe);
3. drives a short workload over gRPC with mediator_client: PSCI and SMCCC calls
   (one unknown), EEMI calls allowed and denied, a refused caller, an injected
   fault that rolls back a host suspend, then the seed's suspend-to-RAM of domu1,
   domu2 and dom0 and the wake-up by domu1's UART, then domu2's USB interrupt;
4. scrapes /metrics and requires a sample for every metric family the daemon
   declares (mediatord.server.metrics), then ``promtool check metrics`` on it;
5. checks grafana-dashboard.json (JSON, required keys, every panel's queries parse
   with promtool) and that every metric the dashboard and alerts.yml select is in the
   scrape, with the labels they match on;
6. stops the daemon with SIGTERM (exit 0) and requires every stderr line to be JSON;
7. cross-checks the Containerfile (COPY sources exist, non-root USER, HEALTHCHECK runs
   the probe it installs) and kubernetes.yaml (the kinds, the security settings, every
   file the daemon is given is under a mount, the ConfigMap's board passes
   ``mediatord check-board``).

Exit 0 when all hold; otherwise every problem is printed and the exit code is 1.

    python deploy/check_deploy.py --promtool PATH [--mediatord PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Final

DEPLOY: Final = Path(__file__).resolve().parent
START_TIMEOUT_S: Final = 20.0
WITHIN_S: Final = 10.0
POLLS: Final = 500
UART_1_IRQ: Final = 54  # domu1's UART_1 (wake source)
USB_0_IRQ: Final = 97  # domu2's USB_0
# Families the StateCollector computes at scrape time (not on the Metrics registry).
STATE_FAMILIES: Final = (
    "mediatord_domains",
    "mediatord_vcpus",
    "mediatord_host_state",
    "mediatord_inflight_calls",
    "mediatord_event_backlog",
    "mediatord_event_watchers",
)
DASHBOARD_PANEL_TYPES: Final = {"timeseries", "stat", "gauge", "bargauge", "heatmap", "table"}
# PromQL words that are not metric names (functions are found by the "(" after them).
PROMQL_WORDS: Final = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


class Problems(list[str]):
    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
            print(f"  FAIL {message}", flush=True)
        return ok


# ---------------------------------------------------------------- the daemon


def start_daemon(mediatord: str, socket: Path, stderr: Any) -> tuple[subprocess.Popen[str], str]:
    command = [
        mediatord,
        "serve",
        "--unix",
        str(socket),
        "--metrics-listen",
        "127.0.0.1:0",
        "--state-dir",
        str(socket.parent / "state"),
        "--log-format",
        "json",
    ]
    print(f"  $ {' '.join(command)}", flush=True)
    daemon = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert daemon.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    metrics_url = ""
    # It prints "mediatord listening on ..." then "mediatord metrics on http://.../metrics".
    while time.monotonic() < deadline:
        line = daemon.stdout.readline()
        if not line:
            break
        found = re.match(r"mediatord metrics on (http://\S+/metrics)", line)
        if found:
            metrics_url = found.group(1)
            break
    if not metrics_url:
        daemon.kill()
        daemon.wait()
        raise SystemExit(f"check-deploy: the daemon did not start (exit {daemon.returncode})")
    return daemon, metrics_url


def stop_daemon(daemon: subprocess.Popen[str]) -> int:
    daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.wait(timeout=15)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        return -9


# ---------------------------------------------------------------- the workload


async def workload(target: str) -> None:
    """Every kind of call, so that every metric family has samples."""
    from mediator_client import (
        AsyncGuestAgent,
        EemiError,
        NotPermittedError,
        Operator,
        PsciError,
        eemi,
        psci,
    )
    from mediator_client.calls import raw
    from mediator_client.eemi import PmNode

    from mediatord.api.mediator.v1 import mediator_pb2 as pb
    from mediatord.core import effects as fx
    from mediatord.core.psci import PsciFn

    async def until(check: Any, what: str) -> None:
        for _ in range(POLLS):
            if await check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never saw {what}")

    async def domain_in(op: Operator, name: str, state: int) -> bool:
        info = await op.domain(name)
        return info is not None and info.state == state

    async def host_in(op: Operator, state: int) -> bool:
        return (await op.system()).host_state == state

    async with (
        AsyncGuestAgent(target, "dom0") as dom0,
        AsyncGuestAgent(target, "domu1") as u1,
        AsyncGuestAgent(target, "domu2") as u2,
        Operator(target) as op,
    ):
        watched: list[pb.SystemEvent] = []

        async def watch() -> None:
            async for event in op.watch():
                watched.append(event)

        watcher = asyncio.create_task(watch())
        # PSCI and SMCCC, one unknown function (NOT_SUPPORTED, function "other").
        await u1.call(psci.psci_version())
        await u1.call(psci.psci_features(PsciFn.CPU_ON_64))
        await u1.call(raw(0x8000_0000))  # SMCCC_VERSION
        await u1.call(raw(0x8400_00FF))  # not a PSCI function
        await u1.call(psci.cpu_on(psci.mpidr(1), 0x4008_0000, 0x7))
        await u1.wait_for(lambda e: e.vcpu == 1 and isinstance(e.kind, fx.Start), within=WITHIN_S)
        await u1.call(psci.affinity_info(psci.mpidr(1)))
        # EEMI: allowed (domu1's own UART) and denied (domu2's USB).
        await u1.call(eemi.get_api_version())
        await u1.call(eemi.request_node(PmNode.NODE_UART_1, eemi.CAP_ACCESS | eemi.CAP_WAKEUP))
        await u1.call(eemi.set_wakeup_source(PmNode.NODE_UART_1))
        with contextlib.suppress(EemiError):
            await u1.call(eemi.request_node(PmNode.NODE_USB_0))
        # A caller acting for another domain: PERMISSION_DENIED.
        async with AsyncGuestAgent(target, "domu2", principal="domain/domu1") as impostor:
            with contextlib.suppress(NotPermittedError):
                await impostor.call(psci.psci_version())

        # A host suspend that fails at save_gic and rolls back.
        await op.inject_fault("save_gic")
        try:
            await dom0.suspend_to_ram(0x4010_0000, 0x33, resume_timeout=WITHIN_S)
        except PsciError:
            pass
        else:
            raise AssertionError("the host suspend with an injected fault succeeded")

        # The seed: domUs suspend, dom0 suspends the host, domu1's UART wakes it.
        s1 = asyncio.create_task(u1.suspend_to_ram(0x4009_0000, 0x11, resume_timeout=WITHIN_S))
        s2 = asyncio.create_task(u2.suspend_to_ram(0x4009_0000, 0x22, resume_timeout=WITHIN_S))
        await until(lambda: domain_in(op, "domu1", pb.DOMAIN_STATE_SUSPENDED), "domu1 suspended")
        await until(lambda: domain_in(op, "domu2", pb.DOMAIN_STATE_SUSPENDED), "domu2 suspended")
        s0 = asyncio.create_task(dom0.suspend_to_ram(0x4010_0000, 0x33, resume_timeout=WITHIN_S))
        await until(lambda: host_in(op, pb.HOST_STATE_SUSPENDED), "the host suspended")
        woke = await op.raise_irq(UART_1_IRQ)
        assert woke.woke_host, woke
        await asyncio.wait_for(asyncio.gather(s0, s1), WITHIN_S * 2)
        woke = await op.raise_irq(USB_0_IRQ)
        assert woke.domain == "domu2", woke
        await asyncio.wait_for(s2, WITHIN_S)
        assert await host_in(op, pb.HOST_STATE_ACTIVE)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        assert watched, "WatchEvents delivered nothing"


# ---------------------------------------------------------------- /metrics


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        body: bytes = reply.read()
    return body.decode()


def samples(exposition: str) -> dict[str, set[str]]:
    """Sample name (with _bucket/_count/_sum/_total) -> the label names it has."""
    names: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            labels = re.findall(r'[{,]\s*([A-Za-z_][A-Za-z0-9_]*)="', line)
            names.setdefault(name, set()).update(labels)
    return names


def declared_families() -> list[tuple[str, str]]:
    """(name, type) of every family the daemon declares, as prometheus_client names them."""
    from mediatord.server.metrics import Metrics

    families = [(f.name, f.type) for f in Metrics().registry.collect()]
    return families + [(name, "gauge") for name in STATE_FAMILIES]


def check_families(exposition: str, problems: Problems) -> None:
    present = set(samples(exposition))
    for family, kind in declared_families():
        wanted = {
            "counter": {f"{family}_total"},
            "histogram": {f"{family}_bucket", f"{family}_count", f"{family}_sum"},
        }.get(kind, {family})
        problems.check(
            wanted <= present,
            f"/metrics has no samples of {kind} {family} (wanted {sorted(wanted - present)})",
        )


def promtool_check_metrics(promtool: str, exposition: str, problems: Problems) -> None:
    run = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    output = (run.stdout + run.stderr).strip()
    problems.check(
        run.returncode == 0, f"promtool check metrics exited {run.returncode}:\n{output}"
    )


# ---------------------------------------------------------------- PromQL users


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (good enough for our queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+|\$\{[^}]*\}", "", text)  # Grafana variables
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = found.group(0)
        rest = text[found.end() :].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        before = text[: found.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # the unit of a number such as 5m or 1e-3
        names.add(word)
    return names


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) of every ``metric{...}`` selector."""
    found = []
    for name, matchers in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        found.append((name, labels))
    return found


def check_query(where: str, expr: str, present: dict[str, set[str]], problems: Problems) -> None:
    """Every metric the query selects is in /metrics, with the labels it matches on."""
    names = metric_names(expr)
    problems.check(bool(names), f"{where}: {expr!r} selects no metric")
    # `up` is Prometheus's own series for the scrape, not the daemon's.
    missing = names - present.keys() - {"up"}
    problems.check(not missing, f"{where}: {sorted(missing)} not in /metrics ({expr})")
    for name, labels in selectors(expr):
        if name in present:
            # job and instance are the target's labels, added by Prometheus.
            unknown = labels - present[name] - {"job", "instance"}
            problems.check(not unknown, f"{where}: {name} has no label {sorted(unknown)}")


def grafana_to_promql(expr: str) -> str:
    """The query as Grafana sends it, with its variables given typical values."""
    for variable, value in (
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "6h"),
        ("$instance", ".*"),
    ):
        expr = expr.replace(variable, value)
    return expr


def dashboard_queries(path: Path, problems: Problems) -> list[tuple[str, str]]:
    """(where, expr) of every panel query, after checking the dashboard's shape."""
    try:
        board = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        problems.check(False, f"{path.name}: not JSON: {error}")
        return []
    for key in ("title", "uid", "schemaVersion", "panels", "time", "templating"):
        problems.check(key in board, f"{path.name}: no top-level {key!r}")
    problems.check(
        isinstance(board.get("schemaVersion"), int), f"{path.name}: schemaVersion not an int"
    )
    panels = board.get("panels") or []
    problems.check(bool(panels), f"{path.name}: no panels")
    ids = [p.get("id") for p in panels]
    problems.check(len(ids) == len(set(ids)), f"{path.name}: panel ids repeat: {ids}")
    queries = []
    for panel in panels:
        title = panel.get("title") or f"panel {panel.get('id')}"
        where = f"{path.name}: panel {title!r}"
        for key in ("id", "type", "title", "gridPos", "datasource", "targets"):
            problems.check(key in panel, f"{where}: no {key!r}")
        grid = panel.get("gridPos") or {}
        problems.check(
            all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y"))
            and grid["x"] + grid["w"] <= 24,
            f"{where}: bad gridPos {grid}",
        )
        if panel.get("type") == "row":
            continue
        problems.check(
            panel.get("type") in DASHBOARD_PANEL_TYPES, f"{where}: type {panel.get('type')!r}"
        )
        targets = panel.get("targets") or []
        problems.check(bool(targets), f"{where}: no targets")
        ref_ids = [t.get("refId") for t in targets]
        problems.check(
            all(ref_ids) and len(ref_ids) == len(set(ref_ids)), f"{where}: refIds {ref_ids}"
        )
        for target in targets:
            expr = str(target.get("expr", "")).strip()
            if problems.check(bool(expr), f"{where}: a target without expr"):
                queries.append((f"{where} {target.get('refId')}", expr))
    return queries


def alert_queries(path: Path, problems: Problems) -> list[tuple[str, str]]:
    exprs = re.findall(r"^\s*expr:\s*(.+)$", path.read_text(), flags=re.MULTILINE)
    problems.check(bool(exprs), f"{path.name}: no expr lines found")
    return [(f"{path.name}", e.strip().strip("'\"")) for e in exprs]


def promtool_parse(promtool: str, queries: list[tuple[str, str]], problems: Problems) -> None:
    """Let promtool parse the dashboard's queries: as recording rules of a scratch file."""
    with tempfile.TemporaryDirectory(prefix="mtd-promql-") as scratch:
        rules = Path(scratch) / "dashboard_queries.yml"
        lines = ["groups:", "  - name: dashboard", "    rules:"]
        for number, (_, expr) in enumerate(queries):
            lines += [
                f"      - record: dashboard:query_{number}",
                f"        expr: {json.dumps(expr)}",
            ]
        rules.write_text("\n".join(lines) + "\n")
        run = subprocess.run(
            [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
        )
    output = (run.stdout + run.stderr).strip()
    problems.check(run.returncode == 0, f"the dashboard's PromQL does not parse:\n{output}")


# ---------------------------------------------------------------- static files


def logical_lines(text: str) -> list[str]:
    """Containerfile lines with continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def check_containerfile(path: Path, problems: Problems) -> None:
    lines = logical_lines(path.read_text())
    where = path.name
    froms = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    problems.check(
        bool(froms) and all(f.startswith("python:3.11-slim") for f in froms),
        f"{where}: base images {froms}, wanted python:3.11-slim",
    )
    copied = []
    for line in lines:
        words = line.split()
        if words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        copied.append(words[-1])
        for source in sources:
            problems.check(
                (DEPLOY.parent / source).exists(), f"{where}: COPY source {source} is missing"
            )
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    problems.check(
        bool(users) and users[-1].split(":")[0] not in ("root", "0"),
        f"{where}: the image must end with a non-root USER, has {users}",
    )
    health = [line for line in lines if line.upper().startswith("HEALTHCHECK ")]
    problems.check(
        bool(health) and any(dest in health[0] for dest in copied),
        f"{where}: HEALTHCHECK must run the probe it COPYs: {health}",
    )
    exposed = " ".join(line for line in lines if line.upper().startswith("EXPOSE "))
    problems.check("9477" in exposed and "50443" in exposed, f"{where}: EXPOSE {exposed!r}")
    probe = "/usr/local/bin/mediatord-healthcheck"
    problems.check(probe in copied, f"{where}: the health probe is not COPYed to {probe}")
    problems.check(
        probe in (DEPLOY / "kubernetes.yaml").read_text(),
        f"kubernetes.yaml: the probes must run the image's {probe}",
    )


def check_kubernetes(path: Path, mediatord: str, problems: Problems) -> None:
    text = path.read_text()
    where = path.name
    kinds = re.findall(r"^kind:\s*(\S+)", text, flags=re.MULTILINE)
    for kind in ("DaemonSet", "Service", "ServiceMonitor", "ConfigMap"):
        problems.check(kind in kinds, f"{where}: no {kind} (has {kinds})")
    for needle in (
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "limits:",
        "secretName: mediatord-tls",
        "port: metrics",
    ):
        problems.check(needle in text, f"{where}: no {needle!r}")
    # Every file the daemon is given lives under a mounted volume.
    mounts = re.findall(r"mountPath:\s*(\S+)", text)
    for flag in ("--tls-cert", "--tls-key", "--client-ca", "--board", "--unix"):
        found = re.search(rf"- {flag}\n\s*- (\S+)", text)
        if problems.check(found is not None, f"{where}: the DaemonSet has no {flag}"):
            assert found is not None
            file = found.group(1)
            problems.check(
                any(file.startswith(m.rstrip("/") + "/") for m in mounts),
                f"{where}: {flag} {file} is not under a volume mount {mounts}",
            )
    # The ConfigMap's board.toml is a board the daemon accepts.
    block = re.search(r"board\.toml: \|\n((?:    .*\n|\n)+)", text)
    if problems.check(block is not None, f"{where}: no board.toml in the ConfigMap"):
        assert block is not None
        board = "".join(line[4:] + "\n" for line in block.group(1).splitlines())
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as file:
            file.write(board)
            file.flush()
            run = subprocess.run(
                [mediatord, "check-board", file.name], capture_output=True, text=True, check=False
            )
        problems.check(
            run.returncode == 0,
            f"{where}: the ConfigMap's board.toml is refused:\n{run.stdout}{run.stderr}",
        )


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--mediatord", default=str(Path(sys.executable).parent / "mediatord"))
    parser.add_argument("--keep", metavar="DIR", type=Path, help="write metrics.txt here too")
    args = parser.parse_args()
    problems = Problems()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mtd-deploy-") as scratch:
        socket = Path(scratch) / "m.sock"
        log_path = Path(scratch) / "stderr.log"
        with log_path.open("w") as stderr:
            daemon, url = start_daemon(args.mediatord, socket, stderr)
            try:
                print(f"  daemon up, metrics at {url}", flush=True)
                probe = subprocess.run(
                    [sys.executable, str(DEPLOY / "healthcheck.py"), f"unix:{socket}"],
                    capture_output=True,
                    text=True,
                    timeout=15,
                    check=False,
                )
                problems.check(
                    probe.returncode == 0 and "SERVING" in probe.stdout,
                    f"healthcheck.py exited {probe.returncode}: {probe.stdout}{probe.stderr}",
                )
                asyncio.run(workload(f"unix:{socket}"))
                print("  workload done", flush=True)
                exposition = scrape(url)
            except BaseException:
                stop_daemon(daemon)
                print("  the daemon's last log lines:", file=sys.stderr)
                for line in log_path.read_text().splitlines()[-20:]:
                    print(f"    {line}", file=sys.stderr)
                raise
            code = stop_daemon(daemon)
        problems.check(code == 0, f"the daemon exited {code} on SIGTERM")
        lines = log_path.read_text().splitlines()
        bad = []
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                bad.append(line)
        problems.check(bool(lines) and not bad, f"stderr lines that are not JSON: {bad[:3]}")
        print(f"  daemon stopped; {len(lines)} JSON log lines", flush=True)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "metrics.txt").write_text(exposition)
    present = samples(exposition)
    print(f"  scraped {len(exposition)} bytes, {len(present)} sample names", flush=True)
    check_families(exposition, problems)
    promtool_check_metrics(args.promtool, exposition, problems)
    print("  promtool check metrics: done", flush=True)
    panels = dashboard_queries(DEPLOY / "grafana-dashboard.json", problems)
    promtool_parse(args.promtool, [(w, grafana_to_promql(e)) for w, e in panels], problems)
    for where, expr in panels + alert_queries(DEPLOY / "alerts.yml", problems):
        check_query(where, expr, present, problems)
    print(f"  dashboard ({len(panels)} queries) and alerts.yml: done", flush=True)
    check_containerfile(DEPLOY / "Containerfile", problems)
    check_kubernetes(DEPLOY / "kubernetes.yaml", args.mediatord, problems)
    print("  Containerfile and kubernetes.yaml cross-checks: done", flush=True)
    took = time.monotonic() - began
    if problems:
        print(f"check-deploy: {len(problems)} problem(s) ({took:.1f} s)", file=sys.stderr)
        return 1
    print(f"  live checks passed in {took:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
