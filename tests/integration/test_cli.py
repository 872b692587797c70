"""The `mediatord` command as a user runs it: real processes, real sockets, signals."""

from __future__ import annotations

import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest

import mediatord
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc

TIMEOUT = 10.0
BOARDS = Path(mediatord.__file__).parent / "boards"
DEFAULT_BOARD_FILE = BOARDS / "zcu102.toml"
MEDIATORD = [sys.executable, "-m", "mediatord"]

DEFAULT_SUMMARY = """\
board zcu102: backend zynqmp, 4 pCPUs (boot pCPU 0), 8 devices
  domain 0 dom0: 4 vCPUs, RAM 0x40000000 + 0x40000000, aarch64, devices: UART_0, SD_0, ETH_3, GPU
  domain 1 domu1: 2 vCPUs, RAM 0x40000000 + 0x10000000, aarch64, devices: UART_1, ETH_0
  domain 2 domu2: 2 vCPUs, RAM 0x40000000 + 0x10000000, aarch64, devices: USB_0, SD_1
"""


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MEDIATORD, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )


def read_line_matching(stream: IO[bytes], pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
    """Read lines from a pipe until one matches, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    fd = stream.fileno()
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"no line matching {pattern!r} within {timeout}s; got {seen!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"stream closed before a line matching {pattern!r}; got {seen!r}")
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            for raw in lines:
                line = raw.decode()
                seen.append(line)
                if match := re.fullmatch(pattern, line):
                    return match


class Daemon:
    """A `mediatord serve` process; stderr (the logs) goes to a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("w") as errors:
            self.process = subprocess.Popen(
                # An ephemeral metrics port: tests must not depend on 9477 being free.
                [*MEDIATORD, "serve", "--metrics-listen", "127.0.0.1:0", *args],
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
            )

    def wait_listening(self, pattern: str) -> re.Match[str]:
        assert self.process.stdout is not None
        return read_line_matching(self.process.stdout, pattern)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def serve(daemons: list[Daemon], tmp_path: Path, *args: str) -> Daemon:
    daemon = Daemon(list(args), tmp_path / f"serve-{len(daemons)}.log")
    daemons.append(daemon)
    return daemon


def psci_version(target: str, domain: str = "domu1") -> list[int]:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GuestStub(channel)
        reply = stub.Call(
            pb.SmcCall(function_id=0x8400_0000),
            metadata=(("x-mediator-domain", domain),),
            timeout=TIMEOUT,
        )
        return list(reply.regs)


def test_serve_on_loopback_tcp(daemons: list[Daemon], tmp_path: Path) -> None:
    daemon = serve(daemons, tmp_path, "--listen", "127.0.0.1:0")
    match = daemon.wait_listening(r"mediatord listening on 127\.0\.0\.1:(\d+)")
    port = int(match.group(1))
    assert 0 < port < 65536

    assert psci_version(f"127.0.0.1:{port}") == [0x10001, 0, 0, 0]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        listing = pb_grpc.ControlStub(channel).ListDomains(pb.ListDomainsRequest(), timeout=TIMEOUT)
    assert [d.name for d in listing.domains] == ["dom0", "domu1", "domu2"]

    assert daemon.terminate() == 0
    # Loopback TCP serves Control to every local user: that is warned about.
    assert "development listener: identity comes from metadata" in daemon.log.read_text()


def test_serve_on_unix_socket(daemons: list[Daemon], tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    daemon = serve(daemons, tmp_path, "--unix", str(path))
    daemon.wait_listening(re.escape(f"mediatord listening on unix:{path}"))
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600

    assert psci_version(f"unix:{path}", "dom0") == [0x10001, 0, 0, 0]
    assert daemon.terminate() == 0


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.1:50051"])
def test_serve_refuses_non_loopback(address: str) -> None:
    result = run("serve", "--listen", address)
    assert result.returncode == 1
    assert "loopback" in result.stderr
    assert result.stdout == ""


def test_check_board_default() -> None:
    result = run("check-board", DEFAULT_BOARD_FILE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == DEFAULT_SUMMARY


def test_check_board_malformed(tmp_path: Path) -> None:
    text = DEFAULT_BOARD_FILE.read_text()
    assert text.count("vcpus = 2") == 2
    board = tmp_path / "broken.toml"
    board.write_text(text.replace("vcpus = 2", "vcpus = 0", 1))
    result = run("check-board", board)
    assert result.returncode == 1
    assert f"{board}: domains[1].vcpus: must be from 1 to 128, got 0" in result.stderr
    assert result.stdout == ""


def test_check_board_not_toml(tmp_path: Path) -> None:
    board = tmp_path / "garbage.toml"
    board.write_text("[board\nname = zcu102\n")
    result = run("check-board", board)
    assert result.returncode == 1
    assert f"{board}: not valid TOML" in result.stderr


def test_serve_with_malformed_board_exits_1(tmp_path: Path) -> None:
    board = tmp_path / "typo.toml"
    board.write_text(DEFAULT_BOARD_FILE.read_text().replace("pcpus = 4", 'pcpus = "4"', 1))
    result = run("serve", "--board", board, "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{board}: board.pcpus: must be an integer, got str '4'" in result.stderr


def test_demo() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "demo finished" in result.stdout
    assert "WOKE_DOMAIN" in result.stdout
    assert "PM_REQ_NODE(NODE_UART_1, 0x5, 0x64, 0x2) -> SUCCESS" in result.stdout


def test_demo_on_the_generic_board() -> None:
    """`make run BOARD=generic`: the same story on a GICv3 board without power firmware."""
    result = run("demo", "--board", "generic")
    assert result.returncode == 0, result.stderr
    assert "a generic Arm board, QEMU virt-like, with a\nGICv3 with 4 CPUs" in result.stdout
    assert (
        "domu1  vCPU 0  0xc2000001() -> x0..x3 = 0xffffffffffffffff, 0x0, 0x0, 0x0"
        "   # no power firmware on this board"
    ) in result.stdout
    assert "interrupt 40 -> WOKE_DOMAIN for domu1 (it woke the board first)" in result.stdout
    assert "dom0   event #2 vcpu=0 RESUME entry=0x40100000 context_id=0x3333" in result.stdout
    assert "demo finished" in result.stdout


def test_demo_on_the_imx8_board() -> None:
    """`make run BOARD=imx8`: device power goes through the SCU firmware, by partition."""
    result = run("demo", "--board", "imx8")
    assert result.returncode == 0, result.stderr
    assert (
        "domu1  vCPU 0  0xc2001203(0x3a, 0x2) -> x0..x3 = 0x0, 0x0, 0x0, 0x0"
        "   # UART_1 to LP: x0 = SC_ERR_NONE"
    ) in result.stdout
    assert "0xc2001203(0x103, 0x0) -> x0..x3 = 0x4, 0x0, 0x0, 0x0" in result.stdout
    assert "demo finished" in result.stdout


def test_check_board_knows_the_embedded_boards() -> None:
    result = run("check-board", "generic")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("board generic: backend generic, 4 pCPUs (boot pCPU 0)")


@pytest.mark.parametrize(
    ("args", "usage", "mentions"),
    [
        (["--help"], "usage: mediatord ", ["serve", "check-board", "demo", "exit codes"]),
        (["serve", "--help"], "usage: mediatord serve ", ["--listen", "--unix", "--board"]),
    ],
    ids=["top", "serve"],
)
def test_help(args: list[str], usage: str, mentions: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0
    assert result.stdout.startswith(usage)
    for word in mentions:
        assert word in result.stdout


def test_entry_point_script_exists() -> None:
    script = Path(sys.executable).parent / "mediatord"
    if not script.exists():
        pytest.skip("no console script installed next to this interpreter")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"mediatord {mediatord.__version__}"


def test_sigterm_ends_open_streams(daemons: list[Daemon], tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    daemon = serve(daemons, tmp_path, "--unix", str(path))
    daemon.wait_listening(re.escape(f"mediatord listening on unix:{path}"))
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stream = pb_grpc.GuestStub(channel).Attach(
            pb.AttachRequest(), metadata=(("x-mediator-domain", "domu1"),), timeout=TIMEOUT * 2
        )
        first = next(stream)
        assert first == pb.VcpuEvent(
            seq=1, vcpu=0, start=pb.Start(entry_point=0x4000_0000, context_id=0)
        )
        # The stream is still open while the daemon is told to stop.
        assert daemon.terminate() == 0
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
        # The server went away after its shutdown grace: the stream ended with it.
        assert info.value.code() in (  # type: ignore[attr-defined]
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.CANCELLED,
        )
