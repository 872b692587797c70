"""Board files: the embedded default board (design.md section 9) and the errors
a malformed board file gets, each naming the file, the key and the problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mediatord.board import BoardError, default_board, load_board, parse_board
from mediatord.core.config import BoardConfig, DeviceConfig, DomainConfig

# ------------------------------------------------------- the default board


def test_default_board_is_design_section_9() -> None:
    board = default_board()
    assert (board.name, board.backend, board.pcpus, board.boot_pcpu) == ("zcu102", "zynqmp", 4, 0)
    assert [(d.name, d.id, d.vcpus, d.ram_base, d.ram_size, d.aarch32) for d in board.domains] == [
        ("dom0", 0, 4, 0x4000_0000, 0x4000_0000, False),
        ("domu1", 1, 2, 0x4000_0000, 0x1000_0000, False),
        ("domu2", 2, 2, 0x4000_0000, 0x1000_0000, False),
    ]
    devices = {d.name: d for d in board.devices}
    owned = {
        domain.name: [(n, devices[n].node_id, devices[n].irq) for n in domain.devices]
        for domain in board.domains
    }
    assert owned == {
        "dom0": [("UART_0", 33, 53), ("SD_0", 39, 80), ("ETH_3", 32, 95), ("GPU", 58, 164)],
        "domu1": [("UART_1", 34, 54), ("ETH_0", 29, 89)],
        "domu2": [("USB_0", 22, 97), ("SD_1", 40, 81)],
    }
    assert sorted(devices) == ["ETH_0", "ETH_3", "GPU", "SD_0", "SD_1", "UART_0", "UART_1", "USB_0"]
    assert all(d.wake_capable for d in board.devices)
    assert all(d.mmio_size > 0 and d.mmio_base % 0x1000 == 0 for d in board.devices)


def test_default_board_is_load_board_without_a_path() -> None:
    assert load_board() == default_board()
    assert load_board(None) == default_board()


# ------------------------------------------------------------ a good board

GOOD = """\
[board]
name = "test"
backend = "zynqmp"
pcpus = 4
boot_pcpu = 0

[devices.UART_0]
node = 33
irq = 53
mmio = { base = 0xFF000000, size = 0x1000 }
wake_capable = true

[devices.UART_1]
node = 34
irq = 54
mmio = { base = 0xFF010000, size = 0x1000 }
wake_capable = true

[[domains]]
name = "dom0"
id = 0
vcpus = 4
ram = { base = 0x40000000, size = 0x40000000 }
arch = "aarch64"
devices = ["UART_0"]

[[domains]]
name = "domu1"
id = 1
vcpus = 2
ram = { base = 0x40000000, size = 0x10000000 }
devices = ["UART_1"]
"""


def edited(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


def test_good_board_parses() -> None:
    assert parse_board(GOOD, "x.toml") == BoardConfig(
        name="test",
        backend="zynqmp",
        pcpus=4,
        boot_pcpu=0,
        devices=(
            DeviceConfig("UART_0", 33, 53, 0xFF00_0000, 0x1000, True),
            DeviceConfig("UART_1", 34, 54, 0xFF01_0000, 0x1000, True),
        ),
        domains=(
            DomainConfig("dom0", 0, 4, 0x4000_0000, 0x4000_0000, False, ("UART_0",)),
            DomainConfig("domu1", 1, 2, 0x4000_0000, 0x1000_0000, False, ("UART_1",)),
        ),
    )


@pytest.mark.parametrize(
    ("old", "new", "check"),
    [
        ('name = "domu1"\nid = 1\n', 'name = "domu1"\nid = 1\narch = "aarch32"\n',
         lambda b: b.domains[1].aarch32),
        ("boot_pcpu = 0\n", "", lambda b: b.boot_pcpu == 0),
        ("boot_pcpu = 0\n", "boot_pcpu = 3\n", lambda b: b.boot_pcpu == 3),
        ("wake_capable = true\n\n[devices.UART_1]", "\n[devices.UART_1]",
         lambda b: not b.devices[0].wake_capable),
        ("irq = 54", "irq = 191", lambda b: b.devices[1].irq == 191),
        ("irq = 54", "irq = 32", lambda b: b.devices[1].irq == 32),
        ("vcpus = 2", "vcpus = 128", lambda b: b.domains[1].vcpus == 128),
        ("vcpus = 2", "vcpus = 1", lambda b: b.domains[1].vcpus == 1),
        ("base = 0x40000000, size = 0x10000000", "base = 0xFFFFFFFFF000, size = 0x1000",
         lambda b: b.domains[1].ram_base + b.domains[1].ram_size == 2**48),
        ('devices = ["UART_1"]\n', "", lambda b: b.domains[1].devices == ()),
        ('name = "domu1"', 'name = "d-9_x"', lambda b: b.domains[1].name == "d-9_x"),
    ],
)  # fmt: skip
def test_good_variants_parse(old: str, new: str, check: Callable[[BoardConfig], bool]) -> None:
    assert check(parse_board(edited(old, new), "x.toml"))


# ------------------------------------------------------- malformed boards


def problem_lines(text: str) -> list[str]:
    with pytest.raises(BoardError) as info:
        parse_board(text, "x.toml")
    error = info.value
    assert error.source == "x.toml"
    assert error.problems
    lines = str(error).splitlines()
    assert len(lines) == len(error.problems)
    assert all(line.startswith("x.toml: ") for line in lines)
    return lines


def assert_problem(text: str, key: str, fragment: str) -> None:
    lines = problem_lines(text)
    wanted = f"x.toml: {key}: " if key else "x.toml: "
    assert any(line.startswith(wanted) and fragment in line for line in lines), lines


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[board\nname = 1\n", "not valid TOML"),
        ('x = "unterminated\n', "not valid TOML"),
        (GOOD + "\n[board]\nname = 'again'\n", "not valid TOML"),
        ("= 3\n", "not valid TOML"),
    ],
)
def test_invalid_toml(text: str, fragment: str) -> None:
    lines = problem_lines(text)
    assert len(lines) == 1
    assert lines[0].startswith(f"x.toml: {fragment}")


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        # unknown keys
        ("[board]\n", "colour = 1\n[board]\n", "colour", "unknown key"),
        ("pcpus = 4\n", "pcpus = 4\ncolour = 'red'\n", "board.colour", "unknown key"),
        ("node = 34\n", "node = 34\ninterrupt = 5\n", "devices.UART_1.interrupt", "unknown key"),
        ("size = 0x1000 }\nwake_capable = true\n\n[devices.UART_1]",
         "size = 0x1000, kind = 1 }\nwake_capable = true\n\n[devices.UART_1]",
         "devices.UART_0.mmio.kind", "unknown key"),
        ("vcpus = 2\n", "vcpus = 2\ncpus = 2\n", "domains[1].cpus", "unknown key"),
        ("size = 0x10000000 }", "size = 0x10000000, cached = true }", "domains[1].ram.cached",
         "unknown key"),
        # wrong types
        ("vcpus = 2", 'vcpus = "two"', "domains[1].vcpus", "must be an integer, got str 'two'"),
        ("vcpus = 2", "vcpus = 2.0", "domains[1].vcpus", "must be an integer, got float"),
        ("pcpus = 4", "pcpus = [4]", "board.pcpus", "must be an integer, got list"),
        ('name = "domu1"', "name = 5", "domains[1].name", "must be a string, got int 5"),
        ('backend = "zynqmp"', "backend = 1", "board.backend", "must be a string"),
        ("irq = 54", 'irq = "54"', "devices.UART_1.irq", "must be an integer, got str"),
        ("node = 34", "node = 34.5", "devices.UART_1.node", "must be an integer"),
        ("wake_capable = true\n\n[[domains]]", "wake_capable = 1\n\n[[domains]]",
         "devices.UART_1.wake_capable", "must be true or false, got int 1"),
        ('devices = ["UART_1"]', 'devices = "UART_1"', "domains[1].devices", "must be an array"),
        ('devices = ["UART_1"]', "devices = [1]", "domains[1].devices",
         "must be an array of device names"),
        ("ram = { base = 0x40000000, size = 0x10000000 }", "ram = 0x40000000",
         "domains[1].ram", "must be a table"),
        ("size = 0x10000000 }", 'size = "256M" }', "domains[1].ram.size", "must be an integer"),
        ('arch = "aarch64"', "arch = 64", "domains[0].arch", "must be a string"),
        ("[board]\n", "board = 1\n[x]\n", "board", "must be a table"),
        ("[devices.UART_0]\nnode = 33\nirq = 53\nmmio = { base = 0xFF000000, size = 0x1000 }\n"
         "wake_capable = true\n", "[devices]\nUART_0 = 5\n", "devices.UART_0", "must be a table"),
        # missing keys
        ("vcpus = 2\n", "", "domains[1].vcpus", "missing"),
        ('name = "domu1"\n', "", "domains[1].name", "missing"),
        ("ram = { base = 0x40000000, size = 0x10000000 }\n", "", "domains[1].ram", "missing"),
        ("base = 0x40000000, size = 0x10000000", "base = 0x40000000", "domains[1].ram.size",
         "missing"),
        ("base = 0x40000000, size = 0x10000000", "size = 0x10000000", "domains[1].ram.base",
         "missing"),
        ('backend = "zynqmp"\n', "", "board.backend", "missing"),
        ("pcpus = 4\n", "", "board.pcpus", "missing"),
        ('name = "test"\n', "", "board.name", "missing"),
        ("node = 34\n", "", "devices.UART_1.node", "missing"),
        ("irq = 54\n", "", "devices.UART_1.irq", "missing"),
        ("mmio = { base = 0xFF010000, size = 0x1000 }\n", "", "devices.UART_1.mmio", "missing"),
        ('[board]\nname = "test"\nbackend = "zynqmp"\npcpus = 4\nboot_pcpu = 0\n', "",
         "board", "missing"),
        # a bool is not an integer
        ("vcpus = 2", "vcpus = true", "domains[1].vcpus", "must be an integer, got bool True"),
        ("id = 0", "id = false", "domains[0].id", "must be an integer, got bool False"),
        ("irq = 54", "irq = true", "devices.UART_1.irq", "must be an integer, got bool"),
        ("node = 34", "node = true", "devices.UART_1.node", "must be an integer, got bool"),
        ("pcpus = 4", "pcpus = true", "board.pcpus", "must be an integer, got bool"),
        ("boot_pcpu = 0", "boot_pcpu = false", "board.boot_pcpu", "must be an integer, got bool"),
        ("size = 0x10000000 }", "size = true }", "domains[1].ram.size", "got bool"),
        # domain names
        ('name = "domu1"', 'name = "Domu1"', "domains[1].name", "'Domu1' is not a domain name"),
        ('name = "domu1"', 'name = "1domu"', "domains[1].name", "is not a domain name"),
        ('name = "domu1"', 'name = "dom u1"', "domains[1].name", "is not a domain name"),
        ('name = "domu1"', 'name = "domu.1"', "domains[1].name", "is not a domain name"),
        ('name = "domu1"', 'name = ""', "domains[1].name", "is not a domain name"),
        ('name = "domu1"', f'name = "{"a" * 33}"', "domains[1].name", "is not a domain name"),
        # duplicates
        ('name = "domu1"', 'name = "dom0"', "domains[1].name", "'dom0' is defined twice"),
        ("id = 1", "id = 0", "domains[1].id", "domain id 0 is used twice"),
        ('devices = ["UART_1"]', 'devices = ["UART_1", "UART_1"]', "domains[1].devices",
         "lists a device twice"),
        # vCPU counts
        ("vcpus = 2", "vcpus = 0", "domains[1].vcpus", "must be from 1 to 128, got 0"),
        ("vcpus = 2", "vcpus = 129", "domains[1].vcpus", "must be from 1 to 128, got 129"),
        ("vcpus = 2", "vcpus = -1", "domains[1].vcpus", "must be from 1 to 128, got -1"),
        # RAM
        ("base = 0x40000000, size = 0x10000000", "base = 0x40000800, size = 0x10000000",
         "domains[1].ram.base", "0x40000800 is not aligned to 4 KiB"),
        ("base = 0x40000000, size = 0x10000000", "base = 0x40000000, size = 0x10000800",
         "domains[1].ram.size", "0x10000800 is not a positive multiple of 4 KiB"),
        ("base = 0x40000000, size = 0x10000000", "base = 0x40000000, size = 0",
         "domains[1].ram.size", "not a positive multiple of 4 KiB"),
        ("base = 0x40000000, size = 0x10000000", "base = 0x40000000, size = -4096",
         "domains[1].ram.size", "not a positive multiple of 4 KiB"),
        ("base = 0x40000000, size = 0x10000000", "base = 0xFFFFFFFFF000, size = 0x2000",
         "domains[1].ram", "ends above the 48-bit IPA space"),
        ("base = 0x40000000, size = 0x10000000", "base = 0x1000000000000, size = 0x1000",
         "domains[1].ram", "ends above the 48-bit IPA space"),
        # devices of domains
        ('devices = ["UART_1"]', 'devices = ["NOPE"]', "domains[1].devices",
         "no device 'NOPE' on this board"),
        ('devices = ["UART_1"]', 'devices = ["UART_0"]', "domains[1].devices",
         "UART_0 is already owned by dom0"),
        # device definitions
        ("irq = 54", "irq = 53", "devices.UART_1.irq", "IRQ 53 is also used by UART_0"),
        ("node = 34", "node = 33", "devices.UART_1.node", "node 33 is also UART_0"),
        ("irq = 54", "irq = 31", "devices.UART_1.irq",
         "must be a GIC SPI INTID from 32 to 1019, got 31"),
        ("irq = 54", "irq = 27", "devices.UART_1.irq", "got 27"),
        ("irq = 54", "irq = 0", "devices.UART_1.irq", "from 32 to 1019"),
        ("irq = 54", "irq = 1020", "devices.UART_1.irq", "got 1020"),
        ("node = 34", "node = 0", "devices.UART_1.node", "must be an EEMI node ID from 1 to 77"),
        ("node = 34", "node = 78", "devices.UART_1.node", "got 78"),
        ("size = 0x1000 }\nwake_capable = true\n\n[[domains]]",
         "size = 0x800 }\nwake_capable = true\n\n[[domains]]",
         "devices.UART_1.mmio.size", "not a positive multiple of 4 KiB"),
        ("base = 0xFF010000", "base = 0xFF010010", "devices.UART_1.mmio.base",
         "not 4 KiB aligned"),
        # the board
        ("id = 0", "id = 5", "domains", "no domain has id 0"),
        ('backend = "zynqmp"', 'backend = "versal"', "board.backend",
         "unknown backend 'versal'; known: zynqmp"),
        ("pcpus = 4", "pcpus = 0", "board.pcpus", "must be from 1 to 4 for 'zynqmp'"),
        ("pcpus = 4", "pcpus = 5", "board.pcpus", "must be from 1 to 4 for 'zynqmp'"),
        ("irq = 54", "irq = 192", "devices.UART_1.irq", "zynqmp's GIC has SPIs up to 191"),
        ("boot_pcpu = 0", "boot_pcpu = 4", "board.boot_pcpu", "below 4"),
        ('arch = "aarch64"', 'arch = "arm64"', "domains[0].arch",
         "must be aarch64 or aarch32, got 'arm64'"),
        ('arch = "aarch64"', 'arch = "AArch64"', "domains[0].arch", "got 'AArch64'"),
    ],
)  # fmt: skip
def test_malformed_board(old: str, new: str, key: str, fragment: str) -> None:
    assert_problem(edited(old, new), key, fragment)


def test_missing_domain_id_is_reported() -> None:
    # `id` is required like every other domain key without a default: a domU
    # without one must not silently become domain -1.
    assert_problem(edited("id = 1\n", ""), "domains[1].id", "missing")


@pytest.mark.parametrize("domain_id", ["-7", "32752"])
def test_domain_id_out_of_range_is_reported(domain_id: str) -> None:
    # 0x7FF0 and above are Xen's reserved DOMID_* values.
    assert_problem(edited("id = 1\n", f"id = {domain_id}\n"), "domains[1].id", "0 to 32751")


def test_board_without_domains() -> None:
    text = GOOD[: GOOD.index("[[domains]]")]
    assert_problem(text, "domains", "needs at least the hardware domain")


def test_lowercase_device_name_is_reported_by_its_key() -> None:
    text = GOOD.replace("UART_1", "uart_1")
    assert_problem(text, "devices.uart_1", "is not a device name")


def test_every_problem_is_reported() -> None:
    text = edited("vcpus = 2", "vcpus = 0").replace('name = "domu1"', 'name = "Bad"')
    lines = problem_lines(text)
    assert any(line.startswith("x.toml: domains[1].vcpus: ") for line in lines)
    assert any(line.startswith("x.toml: domains[1].name: ") for line in lines)


def test_default_source_name() -> None:
    with pytest.raises(BoardError, match=r"^<board>: "):
        parse_board("[")


# ------------------------------------------------------------- load_board


def test_load_board_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(BoardError) as info:
        load_board(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: cannot read")
    assert "No such file or directory" in str(info.value)


def test_load_board_directory(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match="cannot read"):
        load_board(tmp_path)


def test_load_board_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text(GOOD, "utf-8")
    assert load_board(path) == parse_board(GOOD)
    assert load_board(str(path)) == parse_board(GOOD)


def test_load_board_names_the_file_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(edited("vcpus = 2", "vcpus = 0"), "utf-8")
    with pytest.raises(BoardError) as info:
        load_board(path)
    assert str(info.value) == f"{path}: domains[1].vcpus: must be from 1 to 128, got 0"


def test_load_board_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[board]\nname = '\xe9'\n")
    with pytest.raises(BoardError) as info:
        load_board(path)
    assert str(info.value) == f"{path}: not UTF-8 text"
