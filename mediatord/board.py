"""Board files: TOML (read with tomllib) into a validated :class:`BoardConfig`.

Every problem is reported with the file, the dotted key and what is wrong, e.g.
``board.toml: domains[1].vcpus: must be from 1 to 128, got 0``. The schema is in
``docs/board-file.md``; the embedded default board is ``boards/zcu102.toml``.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mediatord.core.config import (
    BACKEND_NODES,
    BACKEND_RESOURCES,
    BoardConfig,
    DeviceConfig,
    DomainConfig,
    Problem,
    board_problems,
)
from mediatord.core.scfw import RESOURCES

DEFAULT_BOARD = "zcu102.toml"
ARCHES = {"aarch64": False, "aarch32": True}


class BoardError(Exception):
    """A board file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Reader:
    """Pulls typed values out of a TOML table, collecting problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def table(self, data: dict[str, Any], key: str, allowed: set[str]) -> None:
        for extra in sorted(set(data) - allowed):
            self.problems.append(
                Problem(
                    f"{key}.{extra}" if key else extra,
                    f"unknown key; expected one of: {', '.join(sorted(allowed))}",
                )
            )

    def get(
        self, data: dict[str, Any], key: str, name: str, kind: type, default: Any = None
    ) -> Any:
        full = f"{key}.{name}" if key else name
        if name not in data:
            if default is None:
                self.problems.append(Problem(full, "missing"))
            return default
        value = data[name]
        # bool is an int in Python; a board file must not say `vcpus = true`.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problems.append(
                Problem(full, f"must be {_kind_name(kind)}, got {type(value).__name__} {value!r}")
            )
            return default
        return value

    def region(self, data: dict[str, Any], key: str, name: str) -> tuple[int, int]:
        full = f"{key}.{name}"
        table = self.get(data, key, name, dict)
        if table is None:
            return 0, 0
        self.table(table, full, {"base", "size"})
        base = self.get(table, full, "base", int)
        size = self.get(table, full, "size", int)
        return (base or 0, size or 0)


def _node(r: _Reader, dev: dict[str, Any], key: str, backend: object) -> int:
    """The device's firmware id: its EEMI node where the backend's firmware has
    nodes; its SCFW resource (``SC_R_UART_1`` or a number) on an i.MX8; absent (0)
    elsewhere (board_problems refuses one given there)."""
    if backend in BACKEND_RESOURCES:
        if "node" in dev:
            r.problems.append(Problem(f"{key}.node", "an i.MX8 device names its `resource`"))
        resource = r.get(dev, key, "resource", object)
        if isinstance(resource, str):
            if resource not in RESOURCES:
                known = ", ".join(sorted(RESOURCES))
                r.problems.append(
                    Problem(f"{key}.resource", f"unknown resource {resource!r}; known: {known}")
                )
                return 0
            return RESOURCES[resource]
        return resource if isinstance(resource, int) and not isinstance(resource, bool) else 0
    if "resource" in dev:
        r.problems.append(Problem(f"{key}.resource", "only an i.MX8 board's devices have one"))
    if "node" in dev or backend in BACKEND_NODES:
        return int(r.get(dev, key, "node", int) or 0)
    return 0


def _kind_name(kind: type) -> str:
    return {
        int: "an integer",
        str: "a string",
        bool: "true or false",
        dict: "a table",
        list: "an array",
    }.get(kind, kind.__name__)


def _or(value: int | None, default: int) -> int:
    """A required key that is missing was already reported; keep a placeholder."""
    return default if value is None else value


def parse_board(text: str, source: str = "<board>") -> BoardConfig:
    """Parse and validate a board file's text. Raises :class:`BoardError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(source, [Problem("", f"not valid TOML: {exc}")]) from None
    r = _Reader()
    r.table(data, "", {"board", "devices", "domains"})
    board = r.get(data, "", "board", dict) or {}
    r.table(board, "board", {"name", "backend", "pcpus", "boot_pcpu"})

    devices: list[DeviceConfig] = []
    for name, dev in (r.get(data, "", "devices", dict, {}) or {}).items():
        key = f"devices.{name}"
        if not isinstance(dev, dict):
            r.problems.append(Problem(key, "must be a table"))
            continue
        r.table(dev, key, {"node", "resource", "irq", "mmio", "wake_capable"})
        base, size = r.region(dev, key, "mmio")
        devices.append(
            DeviceConfig(
                name=name,
                node_id=_node(r, dev, key, board.get("backend")),
                irq=r.get(dev, key, "irq", int) or 0,
                mmio_base=base,
                mmio_size=size,
                wake_capable=r.get(dev, key, "wake_capable", bool, False),
            )
        )

    domains: list[DomainConfig] = []
    for index, dom in enumerate(r.get(data, "", "domains", list, []) or []):
        key = f"domains[{index}]"
        if not isinstance(dom, dict):
            r.problems.append(Problem(key, "must be a table ([[domains]])"))
            continue
        r.table(dom, key, {"name", "id", "vcpus", "ram", "arch", "devices"})
        arch = r.get(dom, key, "arch", str, "aarch64")
        if arch not in ARCHES:
            r.problems.append(Problem(f"{key}.arch", f"must be aarch64 or aarch32, got {arch!r}"))
        owned = r.get(dom, key, "devices", list, [])
        if not all(isinstance(d, str) for d in owned):
            r.problems.append(Problem(f"{key}.devices", "must be an array of device names"))
            owned = []
        base, size = r.region(dom, key, "ram")
        domains.append(
            DomainConfig(
                name=r.get(dom, key, "name", str) or "",
                id=_or(r.get(dom, key, "id", int), -1),
                vcpus=r.get(dom, key, "vcpus", int) or 0,
                ram_base=base,
                ram_size=size,
                aarch32=ARCHES.get(arch, False),
                devices=tuple(owned),
            )
        )
    if not domains:
        r.problems.append(Problem("domains", "a board needs at least the hardware domain (id 0)"))

    config = BoardConfig(
        name=r.get(board, "board", "name", str) or "",
        backend=r.get(board, "board", "backend", str) or "",
        pcpus=r.get(board, "board", "pcpus", int) or 0,
        boot_pcpu=r.get(board, "board", "boot_pcpu", int, 0),
        devices=tuple(devices),
        domains=tuple(domains),
    )
    # Structural problems first; the semantic checks would only repeat them.
    problems = r.problems or board_problems(config)
    if problems:
        raise BoardError(source, problems)
    return config


def embedded_boards() -> list[str]:
    """The names of the boards that come with mediatord (``--board NAME``)."""
    files = resources.files("mediatord.boards").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_board(path: str | Path | None = None) -> BoardConfig:
    """Read a board file; or an embedded board by name (:func:`embedded_boards`), the
    default one when ``path`` is None. A regular file of that name in the working
    directory wins over the embedded board."""
    if path is None or (not Path(path).is_file() and str(path) in embedded_boards()):
        file = DEFAULT_BOARD if path is None else f"{path}.toml"
        text = resources.files("mediatord.boards").joinpath(file).read_text("utf-8")
        return parse_board(text, f"<embedded {file}>")
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise BoardError(str(path), [Problem("", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise BoardError(str(path), [Problem("", "not UTF-8 text")]) from None
    return parse_board(text, str(path))


def default_board() -> BoardConfig:
    return load_board(None)
