"""`mediator-agent` and `mediatorctl` as a user runs them: real processes against a real
`mediatord serve` on loopback TCP, checked by their output and exit codes.

Nothing sleeps: background commands are followed by reading their output with a
deadline, and readiness is polled with bounded loops of RPCs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from mediator_client import agent_cli
from mediator_client import ctl as ctl_main
from processes import stop_process
from seed import RESUME_FLOW, SUSPEND_FLOW

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc

TIMEOUT = 10.0
BIN = Path(sys.executable).parent
MEDIATORD = [sys.executable, "-m", "mediatord"]
SVG = "{http://www.w3.org/2000/svg}"
PM_GET_API_VERSION = 0xC200_0001

SEED_ORDER = [("suspend", n) for n in SUSPEND_FLOW] + [("resume", n) for n in RESUME_FLOW]


def tool(script: str, module: str) -> list[str]:
    """The console script next to this interpreter, else ``python -m``."""
    path = BIN / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


AGENT = tool("mediator-agent", "mediator_client.agent_cli")
CTL = tool("mediatorctl", "mediator_client.ctl")


class Lines:
    """The lines a process writes to a pipe, read with a deadline and all kept."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.lines: list[str] = []
        self._buffer = b""
        self._read = 0  # lines already handed out by next_line / until

    def _fill(self, deadline: float) -> bool:
        """Read once more (False at the deadline or the end of the stream)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            if not selector.select(remaining):
                return False
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return False
        *complete, self._buffer = (self._buffer + chunk).split(b"\n")
        self.lines += [line.decode() for line in complete]
        return True

    def next_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while self._read >= len(self.lines):
            if not self._fill(deadline):
                return None
        self._read += 1
        return self.lines[self._read - 1]

    def until(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            while self._read < len(self.lines):
                self._read += 1
                if match := re.search(pattern, self.lines[self._read - 1]):
                    return match
            if not self._fill(deadline):
                pytest.fail(f"no line matching {pattern!r} within {timeout}s; got {self.lines!r}")


class Processes:
    """Background processes of one test, killed at its end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: list[str], *args: str, stderr: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], Lines]:
        """Start a command; its stderr joins stdout unless it goes to the file ``stderr``."""
        with contextlib.ExitStack() as files:
            errors = subprocess.STDOUT if stderr is None else files.enter_context(stderr.open("w"))
            process = subprocess.Popen(
                [*command, *args], stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL
            )
        self.started.append(process)
        assert process.stdout is not None
        return process, Lines(process.stdout)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def background() -> Iterator[Processes]:
    processes = Processes()
    yield processes
    processes.close()


def start_server(log: Path, *options: str) -> Iterator[str]:
    """A `mediatord serve` on a free loopback port; yields its address."""
    with log.open("w") as errors:
        process = subprocess.Popen(
            # No metrics listener: tests must not depend on its port being free.
            [
                *MEDIATORD,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
                "--state-dir",
                str(log.parent / "state"),
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
        )
    try:
        assert process.stdout is not None
        match = Lines(process.stdout).until(r"^mediatord listening on (127\.0\.0\.1:\d+)$")
        yield match.group(1)
    finally:
        stop_process(process, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the tests that leave the board as they found it (or only add to it)."""
    yield from start_server(tmp_path_factory.mktemp("shared") / "serve.log")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[str]:
    """A server of this test's own, booted with the default board."""
    yield from start_server(tmp_path / "serve.log")


Result = subprocess.CompletedProcess[str]


def run_all(*commands: list[str]) -> list[Result]:
    """Run commands side by side (they must not depend on each other); wait for all."""
    started = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for command in commands
    ]
    results = []
    for command, process in zip(commands, started, strict=True):
        try:
            out, err = process.communicate(timeout=TIMEOUT * 2)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def run(command: list[str], *args: str) -> Result:
    return run_all([*command, *args])[0]


def agent_cmd(target: str, domain: str, *args: str) -> list[str]:
    return [*AGENT, "--target", target, "--domain", domain, *args]


def ctl_cmd(target: str, *args: str) -> list[str]:
    return [*CTL, "--target", target, *args]


def agent(target: str, domain: str, *args: str) -> Result:
    return run(agent_cmd(target, domain, *args))


def ctl(target: str, *args: str) -> Result:
    return run(ctl_cmd(target, *args))


class Direct:
    """The same commands through their ``main(argv)`` in this process, for the finer
    checks: starting a Python process costs far more than the command itself."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def _run(self, main: Callable[[list[str]], int], argv: list[str]) -> Result:
        self.capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse: --help, usage errors
            code = stop.code if isinstance(stop.code, int) else 1
        captured = self.capsys.readouterr()
        return subprocess.CompletedProcess(
            argv, code, captured.out, _without_grpc_noise(captured.err)
        )

    def agent(self, target: str, domain: str, *args: str) -> Result:
        return self._run(agent_cli.main, ["--target", target, "--domain", domain, *args])

    def agent_argv(self, *argv: str) -> Result:
        return self._run(agent_cli.main, list(argv))

    def ctl(self, target: str, *args: str) -> Result:
        return self._run(ctl_main.main, ["--target", target, *args])

    def ctl_argv(self, *argv: str) -> Result:
        return self._run(ctl_main.main, list(argv))


# grpc.aio binds its completion queue's socket to each event loop that used it; when
# an earlier test's loop is closed, asyncio logs this from the poller thread's wake-up
# (grpc/grpc#25364, #34139). It is about that old loop, not the CLI under test.
_GRPC_LOOP_NOISE = re.compile(
    r"Exception in callback PollerCompletionQueue\._handle_events.*?"
    r"RuntimeError: Event loop is closed\n",
    re.DOTALL,
)


def _without_grpc_noise(stderr: str) -> str:
    return _GRPC_LOOP_NOISE.sub("", stderr)


@pytest.fixture
def direct(capsys: pytest.CaptureFixture[str]) -> Direct:
    return Direct(capsys)


def ok(result: Result) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def refused(result: Result) -> str:
    """A refusal: exit 1 and exactly one line on stderr; returns that line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def one_json(text: str) -> Any:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return json.loads(lines[0])


# ------------------------------------------------------------- mediatorctl


def test_list_table_and_json(shared: str) -> None:
    table, listing = run_all(ctl_cmd(shared, "list"), ctl_cmd(shared, "--json", "list"))
    lines = ok(table).splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATE", "VCPUS", "DEVICES"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert re.fullmatch(
        r"dom0\s+0\s+running \(hardware\)\s+1/4\s+UART_0, SD_0, ETH_3, GPU", rows["dom0"]
    )
    assert re.fullmatch(r"domu1\s+1\s+running\s+\d/2\s+UART_1, ETH_0", rows["domu1"])

    domains = one_json(ok(listing))["domains"]
    assert [d["name"] for d in domains][:3] == ["dom0", "domu1", "domu2"]
    dom0 = domains[0]
    assert dom0["id"] == 0
    assert dom0["hardware_domain"] is True
    assert dom0["state"] == "DOMAIN_STATE_RUNNING"
    assert dom0["vcpus_on"] == 1
    assert len(dom0["vcpus"]) == 4
    assert dom0["ram_base"] == 0x4000_0000  # a number, not a string
    assert domains[2]["devices"] == ["USB_0", "SD_1"]


def test_show_a_domain(shared: str, direct: Direct) -> None:
    shown, as_json = run_all(
        ctl_cmd(shared, "show", "domu2"), ctl_cmd(shared, "--json", "show", "domu2")
    )
    text = ok(shown)
    assert text.startswith("domain domu2 (id 2, domU): running\n")
    assert "RAM 0x40000000 + 0x10000000, aarch64" in text
    assert re.search(r"^\s+0\s+0x0\s+on\s+0x40000000\s+0x0$", text, re.M)
    assert re.search(r"^\s+1\s+0x1\s+off\s+", text, re.M)
    assert re.search(r"^\s+USB_0\s+22\s+97\s+0xfe200000\+0x40000\s+domu2\s+yes\s+", text, re.M)
    assert re.search(r"^\s+SD_1\s+40\s+81\s+\S+\s+domu2\s+", text, re.M)

    data = one_json(ok(as_json))
    assert data["domain"]["name"] == "domu2"
    assert [v["mpidr"] for v in data["domain"]["vcpus"]] == [0, 1]
    assert [v["power"] for v in data["domain"]["vcpus"]] == ["VCPU_POWER_ON", "VCPU_POWER_OFF"]
    assert {d["name"]: d["owner"] for d in data["devices"]} == {"USB_0": "domu2", "SD_1": "domu2"}

    unknown = direct.ctl(shared, "show", "nosuch")
    assert refused(unknown) == "mediatorctl: no domain named 'nosuch': check `mediatorctl list`"


def test_system(shared: str) -> None:
    shown, as_json = run_all(ctl_cmd(shared, "system"), ctl_cmd(shared, "--json", "system"))
    text = ok(shown)
    assert text.startswith("board zcu102 (zynqmp): host active")
    assert "watchdog: enabled" in text
    assert "pCPUs (4, boot pCPU 0):" in text
    assert len(re.findall(r"^\s+\d\s+0x\d\s+on$", text, re.M)) == 4
    assert re.search(r"^\s+GPU\s+58\s+164\s+0xfd4b0000\+0x10000\s+dom0\s+", text, re.M)

    system = one_json(ok(as_json))
    assert system["board"] == "zcu102"
    assert system["host_state"] == "HOST_STATE_ACTIVE"
    assert [p["state"] for p in system["pcpu_states"]] == ["PCPU_STATE_ON"] * 4
    assert system["watchdog_enabled"] is True
    assert len(system["devices"]) == 8
    assert isinstance(system["now_ns"], int)


def test_create_assign_release_destroy(shared: str, direct: Direct) -> None:
    assert ok(direct.ctl(shared, "release", "domu2", "SD_1")) == "released SD_1 from domu2\n"
    create = ["create", "domx", "--vcpus", "3", "--ram-base", "0x50000000", "--ram-size"]
    created = ok(direct.ctl(shared, *create, "0x1000000", "--device", "SD_1"))
    assert re.fullmatch(
        r"created domain domx \(id \d+\): 3 vCPUs, RAM 0x50000000 \+ 0x1000000, aarch64, "
        r"devices: SD_1\n",
        created,
    )
    assert re.search(r"^\s+SD_1\s+.*\sdomx\s", ok(direct.ctl(shared, "show", "domx")), re.M)
    again = direct.ctl(shared, "create", "domx", "--vcpus", "1", "--ram-base", "0x50000000",
                       "--ram-size", "0x1000")  # fmt: skip
    assert refused(again).endswith(": check `mediatorctl list`")
    bad = direct.ctl(shared, "create", "domy", "--vcpus", "1", "--ram-base", "0", "--ram-size", "1")
    assert refused(bad).endswith("check the arguments (`mediatorctl create --help`)")

    assert ok(direct.ctl(shared, "destroy", "domx")) == "destroyed domain domx\n"
    assigned = one_json(ok(direct.ctl(shared, "--json", "assign", "domu2", "SD_1")))
    assert assigned == {"assigned": {"domain": "domu2", "device": "SD_1"}}
    domains = {d["name"]: d for d in one_json(ok(direct.ctl(shared, "--json", "list")))["domains"]}
    assert "domx" not in domains
    assert domains["domu2"]["devices"] == ["USB_0", "SD_1"]
    assert refused(direct.ctl(shared, "destroy", "domx")).startswith("mediatorctl: ")


def test_fault_rolls_a_host_suspend_back(shared: str, direct: Direct) -> None:
    armed = ok(direct.ctl(shared, "fault", "save_gic", "--error", "DENIED"))
    assert armed == "the next 1 run(s) of save_gic fail with DENIED\n"
    line = refused(direct.agent(shared, "dom0", "psci", "system-suspend", "0x40300000"))
    assert line.startswith("mediator-agent: SYSTEM_SUSPEND returned DENIED: ")
    # Everything was undone: the host runs, and the timeline shows the rollback.
    assert "host active" in ok(direct.ctl(shared, "system"))
    text = ok(direct.ctl(shared, "timeline"))
    assert re.search(r"suspend\s+save_gic\s+[\d.]+\s+failed \(-3\)", text)
    assert re.search(r"rollback\s+move_to_boot_pcpu\s", text)
    cleared = ok(direct.ctl(shared, "fault", "save_gic", "--count", "0"))
    assert cleared == "cleared the faults of save_gic\n"
    unknown = direct.ctl(shared, "fault", "no_such_step")
    assert "no step named 'no_such_step'; known: " in refused(unknown)


def test_coordinated_suspend_from_the_shell(fresh: str, direct: Direct) -> None:
    # No agent answers: wait-all gives up at the deadline (exit 1), nothing changes.
    line = refused(direct.ctl(fresh, "suspend", "--deadline-ms", "200"))
    assert line == (
        "mediatorctl: system suspend aborted (deadline): not suspended by the deadline: "
        "domu1, domu2; resumed: none"
    )
    assert "host active" in ok(direct.ctl(fresh, "system"))
    # force asks nobody: ready at once; dom0 (its SUSPEND_REQUEST) suspends the host.
    done = ok(direct.ctl(fresh, "--json", "suspend", "--policy", "force"))
    assert one_json(done) == {
        "outcome": "ready",
        "suspended": [],
        "stragglers": ["domu1", "domu2"],
        "vetoed_by": "",
        "reason": "",
        "request": 2,  # the second request of this daemon
    }
    usage = direct.ctl(fresh, "suspend", "--policy", "maybe")
    assert usage.returncode == 2
    assert "invalid choice: 'maybe'" in usage.stderr


def test_events_timeout_without_enough_events(shared: str, direct: Direct) -> None:
    result = direct.ctl(shared, "events", "--count", "1", "--timeout", "0.2")
    assert refused(result) == "mediatorctl: only 0 of 1 events came within 0.2 s"


# ---------------------------------------------------------- mediator-agent


def test_psci_version(shared: str, direct: Direct) -> None:
    assert ok(agent(shared, "domu1", "psci", "version")) == "PSCI 1.1\n"
    assert one_json(ok(direct.agent(shared, "domu1", "--json", "psci", "version"))) == {
        "domain": "domu1",
        "call": "PSCI_VERSION",
        "major": 1,
        "minor": 1,
    }
    assert ok(direct.agent(shared, "domu1", "call", "0x84000000")).splitlines() == [
        "PSCI_VERSION() from vCPU 0:",
        "  x0 = 0x0000000000010001  PSCI 1.1",
        "  x1 = 0x0000000000000000",
        "  x2 = 0x0000000000000000",
        "  x3 = 0x0000000000000000",
    ]
    # MIGRATE is not supported: x0 is -1, decoded; a raw call is not a refusal.
    migrate = ok(direct.agent(shared, "domu1", "call", "0xC4000005", "0x1"))
    assert migrate.splitlines()[1] == "  x0 = 0xffffffffffffffff  NOT_SUPPORTED"
    regs = one_json(ok(direct.agent(shared, "domu1", "--json", "call", "SMCCC_VERSION")))
    assert (regs["regs"], regs["meaning"]) == ([0x10001, 0, 0, 0], "SMCCC 1.1")
    unsupported = direct.agent(shared, "domu1", "psci", "features", "0x84000005")
    assert refused(unsupported).startswith("mediator-agent: PSCI_FEATURES returned NOT_SUPPORTED")
    features = ok(direct.agent(shared, "domu1", "psci", "features", "SYSTEM_SUSPEND_64"))
    assert features == "PSCI_FEATURES(SYSTEM_SUSPEND_64 = 0xc400000e): supported, flags 0x0\n"


def test_cpu_on_then_watch(shared: str, direct: Direct) -> None:
    # A domain of this test's own, so that its events are nobody else's.
    ok(direct.ctl(shared, "create", "domw", "--vcpus", "2", "--ram-base", "0x60000000",
                  "--ram-size", "0x1000000"))  # fmt: skip
    # The first Attach hands out the boot START of vCPU 0.
    first = ok(agent(shared, "domw", "watch", "--count", "1"))
    assert first == "#1 vcpu=0 START entry=0x60000000 context_id=0x0\n"
    started = ok(agent(shared, "domw", "psci", "cpu-on", "0x1", "0x60080000", "0xabc"))
    assert started.startswith(
        "CPU_ON(MPIDR 0x1, entry 0x60080000, context 0xabc) from vCPU 0: SUCCESS"
    )
    # Attach delivers at least once: the boot START may come again, so skip it.
    event = one_json(ok(agent(shared, "domw", "--json", "watch", "--after", "1", "--count", "1")))
    assert event == {
        "domain": "domw",
        "event": {
            "seq": 2,
            "vcpu": 1,
            "kind": "start",
            "entry_point": 0x6008_0000,
            "context_id": 0xABC,
        },
    }
    affinity = ok(direct.agent(shared, "domw", "psci", "affinity-info", "1"))
    assert affinity == "AFFINITY_INFO(MPIDR 0x1, level 0): ON\n"
    again = direct.agent(shared, "domw", "psci", "cpu-on", "1", "0x60080000")
    assert refused(again).startswith("mediator-agent: CPU_ON returned ALREADY_ON: ")

    # A suspend nobody wakes gives up after --timeout, having done its part.
    result = direct.agent(shared, "domw", "suspend", "--entry", "0x60100000", "--timeout", "0.3")
    assert refused(result).startswith("mediator-agent: domw is still suspended: no RESUME")
    assert result.stdout.splitlines() == [
        "domw: vCPU 1 off (CPU_OFF)",
        "domw: suspended (SYSTEM_SUSPEND from vCPU 0, resumes at 0x60100000 with x0 = 0x0); "
        "waiting for a wake interrupt",
    ]
    shown = ok(direct.ctl(shared, "show", "domw"))
    assert re.match(r"domain domw \(id \d+, domU\): suspended\n", shown)
    ok(direct.ctl(shared, "destroy", "domw"))


def test_eemi_own_and_foreign_nodes(shared: str, direct: Direct) -> None:
    foreign = agent(shared, "domu1", "eemi", "request-node", "USB_0")
    line = refused(foreign)
    assert line.startswith("mediator-agent: PM_REQ_NODE returned NO_ACCESS (2002): ")
    assert "`mediatorctl assign domu1 USB_0`" in line
    assert foreign.stdout == ""
    as_json = direct.agent(shared, "domu1", "--json", "eemi", "request-node", "USB_0")
    refused(as_json)
    answer = one_json(as_json.stdout)
    assert answer["ok"] is False
    assert (answer["error"], answer["status"], answer["value"]) == ("EemiError", "NO_ACCESS", 2002)
    assert "NO_ACCESS" in answer["message"]

    assert ok(direct.agent(shared, "domu1", "eemi", "api-version")) == "EEMI API version 1.1\n"
    requested = ok(direct.agent(shared, "domu1", "eemi", "request-node", "NODE_UART_1"))
    assert requested == "PM_REQ_NODE(NODE_UART_1, caps ACCESS, qos 100): SUCCESS\n"
    status = one_json(ok(direct.agent(shared, "domu1", "--json", "eemi", "node-status", "uart_1")))
    assert (status["node"], status["requirements"], status["usage"]) == (34, 1, 1)
    released = ok(direct.agent(shared, "domu1", "eemi", "release-node", "34"))
    assert released == "PM_RELEASE_NODE(NODE_UART_1): SUCCESS\n"


def test_unknown_domain_and_unreachable_daemon(
    shared: str, direct: Direct, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = "mediator-agent: domain 'nosuch' does not exist: check `mediatorctl list`"
    assert refused(agent(shared, "nosuch", "psci", "version")) == expected
    assert refused(direct.agent(shared, "nosuch", "watch", "--count", "1")) == expected

    # Port 1 on loopback: nothing listens there.
    line = refused(direct.ctl("127.0.0.1:1", "list"))
    assert line.startswith("mediatorctl: cannot reach mediatord at 127.0.0.1:1")
    assert "`mediatord serve`" in line
    monkeypatch.setenv("MEDIATOR_TARGET", shared)
    assert ok(direct.agent_argv("--domain", "domu1", "psci", "version")) == "PSCI 1.1\n"


USAGE_ERRORS = {
    "no-domain": ("agent", ["psci", "version"], "--domain"),
    "missing-arg": ("agent", ["--domain", "domu1", "psci", "cpu-on", "1"], "ENTRY"),
    "bad-node": ("agent", ["--domain", "domu1", "eemi", "request-node", "NOPE"], "unknown node"),
    "wide-fid": ("agent", ["--domain", "domu1", "call", "0x1ffffffff"], "32 bits"),
    "no-command": ("ctl", [], "COMMAND"),
    "bad-irq": ("ctl", ["irq", "uart"], "not a number"),
    "bad-error": ("ctl", ["fault", "save_gic", "--error", "BOGUS"], "bad error"),
}


def test_usage_errors_exit_2(direct: Direct) -> None:
    for real in run_all([*AGENT, "psci", "version"], [*CTL, "irq", "uart"]):
        assert real.returncode == 2, real
        assert real.stdout == ""
        assert real.stderr.startswith("usage: ")
    for case, (tool, args, says) in USAGE_ERRORS.items():
        result = direct.agent_argv(*args) if tool == "agent" else direct.ctl_argv(*args)
        assert result.returncode == 2, (case, result)
        assert result.stdout == "", case
        assert "usage: " in result.stderr, case
        assert says in result.stderr, (case, result.stderr)


def test_help(direct: Direct) -> None:
    text = ok(direct.agent_argv("--help"))
    assert text.startswith("usage: mediator-agent ")
    for word in ("call", "psci", "eemi", "suspend", "watch", "exit codes"):
        assert word in text
    text = ok(direct.ctl_argv("--help"))
    assert text.startswith("usage: mediatorctl ")
    for word in ("list", "show", "system", "irq", "fault", "events", "timeline", "exit codes"):
        assert word in text


# ------------------------------------------------- suspend and resume by IRQ


def test_irq_resumes_a_suspended_domu(fresh: str, background: Processes, direct: Direct) -> None:
    ok(direct.agent(fresh, "domu1", "psci", "cpu-on", "1", "0x40080000"))
    process, lines = background.start(
        AGENT, "--target", fresh, "--domain", "domu1", "suspend",
        "--entry", "0x40100000", "--context-id", "0xd1", "--timeout", str(TIMEOUT),
    )  # fmt: skip
    lines.until(r"^domu1: vCPU 1 off \(CPU_OFF\)$")
    lines.until(r"^domu1: suspended .*; waiting for a wake interrupt$")
    assert "domain domu1 (id 1, domU): suspended" in ok(direct.ctl(fresh, "show", "domu1"))

    assert ok(ctl(fresh, "irq", "54")) == "IRQ 54: WOKE_DOMAIN: resumed domu1 (vCPU 0)\n"
    lines.until(r"^domu1: vCPU 1 back on at 0x40100000 \(CPU_ON\)$")
    lines.until(r"^domu1: resumed by #\d+ vcpu=0 RESUME entry=0x40100000 context_id=0xd1 after ")
    assert process.wait(timeout=TIMEOUT) == 0
    shown = one_json(ok(direct.ctl(fresh, "--json", "show", "domu1")))["domain"]
    assert shown["state"] == "DOMAIN_STATE_RUNNING"
    assert shown["vcpus_on"] == 2


def test_host_suspend_and_timeline(
    fresh: str, background: Processes, tmp_path: Path, direct: Direct
) -> None:
    watcher, events = background.start(
        CTL, "--target", fresh, "--json", "events", stderr=tmp_path / "events.err"
    )
    # The stream sees only what happens once the server follows it: make harmless
    # EEMI calls (each a firmware_call event) until one shows up.
    with grpc.insecure_channel(fresh) as channel:
        guest = pb_grpc.GuestStub(channel)
        for _ in range(200):
            guest.Call(
                pb.SmcCall(function_id=PM_GET_API_VERSION),
                metadata=(("x-mediator-domain", "domu2"),),
                timeout=TIMEOUT,
            )
            if events.next_line(timeout=0.05) is not None:
                break
        else:
            pytest.fail("`mediatorctl events` never showed an event")

    def suspend(domain: str, entry: str) -> tuple[subprocess.Popen[bytes], Lines]:
        return background.start(
            AGENT, "--target", fresh, "--domain", domain, "suspend", "--entry", entry,
            "--timeout", str(TIMEOUT),
        )  # fmt: skip

    def suspended(domain: str, lines: Lines) -> None:
        lines.until(rf"^{domain}: suspended .*; waiting for a wake interrupt$")

    (domu1, domu1_lines), (domu2, domu2_lines) = (
        suspend("domu1", "0x40100000"),
        suspend("domu2", "0x40200000"),
    )
    suspended("domu1", domu1_lines)
    suspended("domu2", domu2_lines)
    # A domU suspending is not the host (seed: "Xen will not suspend").
    system = one_json(ok(direct.ctl(fresh, "--json", "system")))
    assert system["host_state"] == "HOST_STATE_ACTIVE"
    dom0, dom0_lines = suspend("dom0", "0x40300000")
    suspended("dom0", dom0_lines)
    system = one_json(ok(direct.ctl(fresh, "--json", "system")))
    assert system["host_state"] == "HOST_STATE_SUSPENDED"
    assert system["watchdog_enabled"] is False

    # Seed 4.2: domu1's UART wakes the host, dom0 resumes, then domu1.
    raised = ok(ctl(fresh, "irq", "54"))
    assert raised == "IRQ 54: WOKE_DOMAIN: resumed domu1 (vCPU 0); woke the host first\n"
    dom0_lines.until(r"^dom0: resumed by #\d+ vcpu=0 RESUME entry=0x40300000 ")
    domu1_lines.until(r"^domu1: resumed by #\d+ vcpu=0 RESUME entry=0x40100000 ")
    assert dom0.wait(timeout=TIMEOUT) == 0
    assert domu1.wait(timeout=TIMEOUT) == 0
    # domu2 stays suspended until its own interrupt (seed 4.1).
    assert domu2.poll() is None
    assert one_json(ok(direct.ctl(fresh, "--json", "irq", "97"))) == {
        "irq": 97,
        "outcome": "OUTCOME_WOKE_DOMAIN",
        "domain": "domu2",
        "vcpu": 0,
        "reason": "",
        "woke_host": False,
    }
    domu2_lines.until(r"^domu2: resumed by ")
    assert domu2.wait(timeout=TIMEOUT) == 0

    events.until(r'"name": "resume_hardware_domain"')
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(timeout=TIMEOUT) == 0
    collected = [json.loads(line) for line in events.lines if line]
    assert all(e["kind"] in e for e in collected)
    seqs = [e["seq"] for e in collected]
    assert seqs == sorted(seqs)
    host_steps = [(e["host_step"]["phase"], e["host_step"]["name"])
                  for e in collected if e["kind"] == "host_step"]  # fmt: skip
    assert host_steps == SEED_ORDER

    # The text timeline: every step in the seed's order, each with its duration.
    svg_path = tmp_path / "out.svg"
    shown, written = run_all(
        ctl_cmd(fresh, "timeline"), ctl_cmd(fresh, "timeline", "--svg", str(svg_path))
    )
    text = ok(shown).splitlines()
    assert text[0].split() == ["at", "(ms)", "phase", "step", "took", "(us)", "result"]
    rows = [re.match(r"\s*[\d.]+\s+(\w+)\s+(\S+).*\s([\d.]+)\s+ok$", line) for line in text[1:22]]
    assert all(rows), text
    steps = [(m.group(1), m.group(2)) for m in rows if m]
    assert [s for s in steps if s[0] != "hardware"] == SEED_ORDER
    assert steps[10] == ("hardware", "soc.wake")  # the PMU powers the SoC up first
    assert re.fullmatch(r"suspend: [\d.]+ us \(dom0's SYSTEM_SUSPEND to the SoC suspended\)",
                        text[22])  # fmt: skip
    assert text[23].startswith("resume: ")

    # The SVG: one group per step, in the order WatchEvents delivered the host steps.
    assert ok(written) == f"wrote {svg_path}: 21 steps of the last host suspend and resume\n"
    root = ET.parse(svg_path).getroot()
    assert root.tag == f"{SVG}svg"
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "step"]
    chart = [(g.get("data-phase"), g.get("data-name")) for g in groups]
    assert [c for c in chart if c[0] != "hardware"] == host_steps
    assert chart[10] == ("hardware", "soc.wake (the SoC powers up)")
    # Within an operation only modelled time passes: the hypervisor's own steps
    # take none, each hardware operation its modelled latency.
    durations = [(g.get("data-phase"), int(g.get("data-duration-ns", "-1"))) for g in groups]
    assert all(ns > 0 if phase == "hardware" else ns >= 0 for phase, ns in durations)

    data = one_json(ok(direct.ctl(fresh, "--json", "timeline")))
    assert [(s["phase"], s["name"]) for s in data["steps"] if s["phase"] != "hardware"] == (
        SEED_ORDER
    )
    assert data["last_suspend_ns"] > 0
    assert data["last_resume_ns"] > 0


# ------------------------------------------------------------------------ TLS


def test_certs_init_then_mtls(tmp_path: Path, direct: Direct) -> None:
    certs = tmp_path / "certs"
    written = ok(run(CTL, "certs", "init", str(certs)))
    assert written.startswith(f"wrote 12 files to {certs}: ca.pem, ca.key, server.pem, ")
    assert (certs / "operator-admin.pem").exists()
    assert (certs / "domain-domu1.key").stat().st_mode & 0o077 == 0
    tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
           "--client-ca", str(certs / "ca.pem"))  # fmt: skip
    server = start_server(tmp_path / "serve.log", *tls)
    target = next(server)
    try:
        listing, version = run_all(
            ctl_cmd(target, "--certs", str(certs), "--json", "list"),
            agent_cmd(target, "domu1", "--certs", str(certs), "psci", "version"),
        )
        assert [d["name"] for d in one_json(ok(listing))["domains"]] == ["dom0", "domu1", "domu2"]
        assert ok(version) == "PSCI 1.1\n"
        # Without a certificate the handshake fails: the hint names --certs.
        assert "--certs DIR" in refused(direct.ctl(target, "list"))
        # Another domain's certificate may not act for domu1.
        line = refused(direct.agent(target, "domu1", "--certs", str(certs), "--principal",
                                    "domain/domu2", "psci", "version"))  # fmt: skip
        assert line.startswith("mediator-agent: not permitted: ")
        line = refused(direct.ctl(target, "--certs", str(certs), "--principal", "bob", "list"))
        assert "operator-bob.pem" in line
    finally:
        server.close()
