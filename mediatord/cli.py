"""Command line: ``mediatord serve | check-state | check-board | demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from mediatord import __version__, logs
from mediatord.board import BoardError, embedded_boards, load_board
from mediatord.core.config import BoardConfig
from mediatord.journal import JournalError
from mediatord.server import app, recovery
from mediatord.server.journaling import SNAPSHOT_EVERY

DESCRIPTION = """\
mediatord: a PSCI / EEMI mediator daemon. Guest agents send the raw SMC/HVC calls
of their vCPUs over gRPC and get exact SMCCC results and vCPU events back; the
daemon keeps the authoritative domain, vCPU, device and host power state.
"""

EPILOG = """\
exit codes: 0 ok, 1 the board, listener or state was refused (check-state: damage
found), 2 usage error.
The wire contract is proto/mediator/v1/mediator.proto; see README.md and docs/.
"""


def _board_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--board",
        metavar="FILE",
        type=Path,
        help="TOML board file (domains, devices, pCPUs), or the name of an embedded board: "
        "zcu102 (the default: a ZynqMP with dom0, domu1 and domu2), generic (a QEMU "
        "virt-like GICv3 board without power firmware) or imx8 (an i.MX8QM whose SCU "
        "firmware owns resources by partition); docs/board-file.md",
    )


def _listen_args(parser: argparse.ArgumentParser, default_tcp: str | None) -> None:
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="development listener on loopback TCP (127.0.0.0/8, [::1] or localhost; "
        f"port 0 picks a free one){f'; default {default_tcp}' if default_tcp else ''}. "
        "Identity comes from metadata x-mediator-domain, so other addresses are refused",
    )
    parser.add_argument(
        "--unix",
        metavar="PATH",
        type=Path,
        action="append",
        default=[],
        help="development listener on a unix socket, created mode 0600",
    )


def _log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=logs.LEVELS, default="info")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="auto: key=value on a terminal, JSON lines otherwise (logs go to stderr)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediatord",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mediatord {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the daemon",
        description="Boot the board's domains and serve the Guest and Control gRPC services "
        "(plus grpc.health.v1 and server reflection) until SIGINT/SIGTERM.",
    )
    _board_arg(serve)
    _listen_args(serve, app.DEFAULT_LISTEN)
    tls = serve.add_argument_group(
        "TLS (production)",
        "With all three, every --listen address is a TLS listener that requires a client "
        "certificate (mTLS); identity comes from its SAN URI mediator://domain/<name> or "
        "mediator://operator/<name>, and any address may be used. Make them with "
        "`mediatorctl certs init DIR`. --unix sockets stay development listeners.",
    )
    tls.add_argument("--tls-cert", metavar="FILE", type=Path, help="server certificate (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", type=Path, help="server private key (PEM)")
    tls.add_argument(
        "--client-ca", metavar="FILE", type=Path, help="CA that signs client certificates (PEM)"
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=app.DEFAULT_METRICS_LISTEN,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default "
        f"{app.DEFAULT_METRICS_LISTEN}; 'off' disables)",
    )
    state = serve.add_argument_group(
        "state",
        "Every accepted change is journalled in DIR before it is answered, and a restart "
        "recovers exactly that state (docs/journal.md).",
    )
    state.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"where the journal lives (default {recovery.default_state_dir()}, "
        "i.e. $XDG_STATE_HOME/mediatord)",
    )
    state.add_argument(
        "--no-journal",
        action="store_true",
        help="keep no state: a restart boots the board afresh (tests, benchmarks)",
    )
    state.add_argument(
        "--snapshot-every",
        metavar="N",
        type=int,
        default=SNAPSHOT_EVERY,
        help=f"records between snapshots, which bound the replay at start (default "
        f"{SNAPSHOT_EVERY})",
    )
    _log_args(serve)

    check_state = commands.add_parser(
        "check-state",
        help="check a state directory offline",
        description="Rebuild the state a journal holds, from a copy of it (DIR is not "
        "changed), and report damage (a torn WAL tail, records failing their checksum) and "
        "the recovered state. Exit 0: intact; 1: damaged (the valid prefix is shown) or not "
        "recoverable. Refused while a mediatord uses DIR: use `mediatorctl state export`.",
    )
    check_state.add_argument("dir", metavar="DIR", type=Path)
    _board_arg(check_state)
    check_state.add_argument(
        "--json", action="store_true", help="print the whole state document as JSON"
    )

    check = commands.add_parser(
        "check-board",
        help="validate a board file",
        description=f"Read a board file (or an embedded board: {', '.join(embedded_boards())}) "
        "and report every problem with its key, or print a summary of the board when it is "
        "valid.",
    )
    check.add_argument("file", metavar="FILE", type=Path)

    demo = commands.add_parser(
        "demo",
        help="run the daemon with a scripted guest session (what `make run` does)",
        description="Start the daemon (on a private unix socket unless --listen/--unix is "
        "given), drive a short session as dom0, domu1 and domu2 over gRPC, print every call, "
        "result and vCPU event, and exit 0 when it ends.",
    )
    _board_arg(demo)
    _listen_args(demo, None)
    demo.add_argument(
        "--serve-forever", action="store_true", help="keep serving after the demo until Ctrl-C"
    )
    demo.add_argument("--log-level", choices=logs.LEVELS, default="warning")
    return parser


def _tls(args: argparse.Namespace) -> app.TlsConfig | None:
    given = [getattr(args, n, None) for n in ("tls_cert", "tls_key", "client_ca")]
    if not any(given):
        return None
    if not all(given):
        raise app.ListenError("--tls-cert, --tls-key and --client-ca go together")
    return app.TlsConfig(args.tls_cert, args.tls_key, args.client_ca)


def _listeners(args: argparse.Namespace, default_tcp: str | None) -> list[app.Listener]:
    tls = _tls(args)
    listeners = [app.Listener(tcp=a, tls=tls) for a in args.listen]
    listeners += [app.Listener(unix=p) for p in args.unix]
    if not listeners and default_tcp:
        listeners.append(app.Listener(tcp=default_tcp, tls=tls))
    return listeners


def _summary(board: BoardConfig) -> str:
    lines = [
        f"board {board.name}: backend {board.backend}, {board.pcpus} pCPUs "
        f"(boot pCPU {board.boot_pcpu}), {len(board.devices)} devices"
    ]
    for domain in sorted(board.domains, key=lambda d: d.id):
        arch = "aarch32" if domain.aarch32 else "aarch64"
        lines.append(
            f"  domain {domain.id} {domain.name}: {domain.vcpus} vCPUs, RAM {domain.ram_base:#x}"
            f" + {domain.ram_size:#x}, {arch}, devices: {', '.join(domain.devices) or 'none'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-board":
            print(_summary(load_board(args.file)))
            return 0
        board = load_board(args.board)
        if args.command == "check-state":
            return _check_state(args.dir, board, args.json)
        if args.command == "serve":
            if args.snapshot_every < 1:
                print("mediatord: --snapshot-every must be at least 1", file=sys.stderr)
                return 2
            if args.no_journal and (args.state_dir or args.snapshot_every != SNAPSHOT_EVERY):
                print(
                    "mediatord: --no-journal keeps no state: --state-dir and --snapshot-every "
                    "do not go with it",
                    file=sys.stderr,
                )
                return 2
            state_dir = None if args.no_journal else args.state_dir or recovery.default_state_dir()
            logs.configure(args.log_level, args.log_format)
            listeners = _listeners(args, app.DEFAULT_LISTEN)
            for listener in listeners:
                if listener.tcp is not None and listener.tls is None:
                    app.require_loopback(listener.tcp)
            metrics = None if args.metrics_listen == "off" else args.metrics_listen
            asyncio.run(_serve(board, listeners, metrics, state_dir, args.snapshot_every))
            return 0
        logs.configure(args.log_level, "console")
        listeners = _listeners(args, None)
        asyncio.run(_demo(board, listeners[0] if listeners else None, args.serve_forever))
        return 0
    except BoardError as error:
        print(f"mediatord: invalid board file\n{error}", file=sys.stderr)
        return 1
    except (app.ListenError, JournalError) as error:
        print(f"mediatord: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _check_state(state_dir: Path, board: BoardConfig, as_json: bool) -> int:
    doc, damaged = recovery.check(state_dir, board)
    if as_json:
        print(json.dumps(doc, indent=2))
        return 1 if damaged else 0
    journal = doc["journal"]
    found = journal["recovered"]
    print(
        f"{state_dir}: journal up to record {journal['seq']}, snapshot at "
        f"{found['snapshot_seq']}, {found['replayed']} records replayed in "
        f"{found['seconds'] * 1000:.1f} ms"
    )
    for damage in found["damage"]:
        print(f"  DAMAGE ({damage['where']} at {damage['offset']}, {damage['lost']} lost): "
              f"{damage['reason']}")  # fmt: skip
    if journal["quarantined_before"]:
        print(f"  {journal['quarantined_before']} records were quarantined at earlier starts")
    system = doc["system"]
    print(f"host {system['host_state']}, {len(doc['domains'])} domains:")
    for domain in doc["domains"]:
        vcpus = " ".join(v.get("power", "VCPU_POWER_OFF").removeprefix("VCPU_POWER_").lower()
                         for v in domain["vcpus"])  # fmt: skip
        queued = len(doc["queued_events"].get(domain["name"], []))
        print(
            f"  {domain['name']}: {domain['state'].removeprefix('DOMAIN_STATE_').lower()}, "
            f"vCPUs [{vcpus}], devices {', '.join(domain.get('devices', [])) or 'none'}, "
            f"{queued} queued events"
        )
    print("damaged: the state above is the valid prefix" if damaged else "intact")
    return 1 if damaged else 0


async def _serve(
    board: BoardConfig,
    listeners: list[app.Listener],
    metrics_listen: str | None,
    state_dir: Path | None,
    snapshot_every: int,
) -> None:
    server = await app.start(
        board,
        listeners,
        metrics_listen=metrics_listen,
        state_dir=state_dir,
        snapshot_every=snapshot_every,
    )
    for address in server.addresses:
        print(f"mediatord listening on {address}", flush=True)
    if server.metrics_address:
        print(f"mediatord metrics on http://{server.metrics_address}/metrics", flush=True)
    await app.serve_until_signalled(server)
    if server.failure is not None:
        raise JournalError(f"{server.failure}; restart to recover the acknowledged state")


async def _demo(board: BoardConfig, listener: app.Listener | None, forever: bool) -> None:
    from mediatord import demo

    await demo.run(board, listener, forever, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
