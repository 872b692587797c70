"""The last host suspend and resume as a timeline: text for a terminal, SVG for a page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from xml.sax.saxutils import escape

from mediatord.api.mediator.v1 import mediator_pb2 as pb

ROW_HEIGHT: Final = 22
LABEL_WIDTH: Final = 230
BAR_WIDTH: Final = 560
MIN_BAR: Final = 2


@dataclass
class Step:
    phase: str  # suspend, rollback, resume, or "hardware" for the PMU's wake-up
    name: str
    start_ns: int
    end_ns: int
    result: int
    hardware: list[str] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def steps(events: list[pb.SystemEvent]) -> list[Step]:
    """Host steps in order, each with the hardware operations it made."""
    out: list[Step] = []
    pending: list[str] = []
    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "hardware_step":
            hw = event.hardware_step
            if hw.name == "soc.wake":
                out.append(
                    Step("hardware", "soc.wake (the SoC powers up)", hw.start_ns, hw.end_ns, 0)
                )
                continue
            pending.append(f"{hw.name} {hw.detail}".strip())
        elif kind == "host_step":
            hs = event.host_step
            out.append(Step(hs.phase, hs.name, hs.start_ns, hs.end_ns, hs.result, pending))
            pending = []
    return out


def of_system(system: pb.SystemInfo) -> list[Step]:
    return steps(list(system.last_suspend_steps)) + steps(list(system.last_resume_steps))


def _scale(group: list[Step]) -> tuple[int, int]:
    """Where a group of steps starts and how long it lasts (at least 1 ns)."""
    if not group:
        return 0, 1
    origin = min(r.start_ns for r in group)
    return origin, max(max(r.end_ns for r in group) - origin, 1)


def text(rows: list[Step]) -> str:
    if not rows:
        return "no host suspend yet"
    origin = rows[0].start_ns
    lines = [f"{'at (ms)':>10}  {'phase':<9} {'step':<26} {'took (us)':>10}  result"]
    for row in rows:
        status = "ok" if row.result == 0 else f"failed ({row.result})"
        lines.append(
            f"{(row.start_ns - origin) / 1e6:10.3f}  {row.phase:<9} {row.name:<26} "
            f"{row.duration_ns / 1e3:10.1f}  {status}"
        )
    return "\n".join(lines)


def _attr(value: str) -> str:
    """Text for a double-quoted XML attribute (``escape`` alone leaves the quote)."""
    return escape(value, {'"': "&quot;"})


def svg(rows: list[Step], title: str = "mediatord: last host suspend and resume") -> str:
    """A Gantt chart, one bar per step. Suspend (with any rollback) and resume each
    get their own time scale: the seconds spent asleep between them would
    otherwise squash every step to a sliver."""
    height = (len(rows) + 2) * ROW_HEIGHT
    width = LABEL_WIDTH + BAR_WIDTH + 120
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="{ROW_HEIGHT - 6}" font-weight="bold">{escape(title)}</text>',
    ]
    colours = {
        "suspend": "#4a78b5",
        "rollback": "#c0392b",
        "resume": "#2e8b57",
        "hardware": "#8e8e8e",
    }
    going = [r for r in rows if r.phase in ("suspend", "rollback")]
    coming = [r for r in rows if r.phase not in ("suspend", "rollback")]
    scale = {id(r): _scale(group) for group in (going, coming) for r in group}
    for index, row in enumerate(rows, start=1):
        origin, span = scale[id(row)]
        y = index * ROW_HEIGHT + 4
        x = LABEL_WIDTH + (row.start_ns - origin) * BAR_WIDTH // span
        w = max(row.duration_ns * BAR_WIDTH // span, MIN_BAR)
        colour = "#c0392b" if row.result else colours.get(row.phase, "#4a78b5")
        label = f"{row.phase}: {row.name}"
        parts.append(
            f'<g class="step" data-phase="{_attr(row.phase)}" data-name="{_attr(row.name)}" '
            f'data-start-ns="{row.start_ns}" data-duration-ns="{row.duration_ns}">'
            f'<text x="4" y="{y + 12}">{escape(label)}</text>'
            f'<rect x="{x}" y="{y}" width="{w}" height="{ROW_HEIGHT - 8}" fill="{colour}"/>'
            f'<text x="{x + w + 4}" y="{y + 12}">{row.duration_ns / 1e3:.1f} us</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
