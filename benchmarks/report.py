"""What a ``pktx bench`` run reports: its tables (rows of numbers with units), notes, targets met
or missed and the machine; printed as rich tables for a person or as one JSON document."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    """A table's column: ``key`` in JSON, ``title`` for a person; a number in it is in ``unit``
    and shown by ``show`` (a format string, or a function of the number)."""

    key: str
    title: str
    unit: str | None = None
    show: str | Callable[[Any], str] = "{}"


def label(key: str) -> Column:
    """A column of text: what a row is, a comparison, a note."""
    return Column(key, key.replace("_", " "))


# The columns most tables share: one place for their keys, units and how they are shown.
WHAT = label("what")
SECONDS = Column("seconds", "seconds", "s", "{:.3f}")
PACKET_RATE = Column("packets_per_s", "Mpackets/s", "packets/s", lambda v: f"{v / 1e6:.2f}")
BYTE_RATE = Column("bytes_per_s", "MB/s", "bytes/s", lambda v: f"{v / 1e6:,.0f}")


@dataclass(frozen=True)
class Quantity:
    """A cell whose unit is its own (a "measured" column of mixed rows): ``value`` (a number, or
    a tuple of them such as stored / sent / failed) in ``unit``, shown to a person as ``text``."""

    value: Any
    unit: str
    text: str


@dataclass
class Sheet:
    title: str
    columns: Sequence[Column]
    rows: list[list[Any]] = field(default_factory=list)
    sections: set[int] = field(default_factory=set)

    def add_row(self, *cells: Any) -> None:
        """One row: a number (in its column's unit), a `Quantity`, text, or None (blank)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def add_section(self) -> None:
        self.sections.add(len(self.rows))

    def as_json(self) -> dict:
        def cell(v):
            if isinstance(v, Quantity):
                value = list(v.value) if isinstance(v.value, tuple) else v.value
                return {"value": value, "unit": v.unit}
            return v

        return {
            "title": self.title,
            "columns": [{"key": c.key, "title": c.title, "unit": c.unit} for c in self.columns],
            "rows": [{c.key: cell(v) for c, v in zip(self.columns, r)} for r in self.rows],
        }

    def as_rich(self):
        from rich.table import Table

        t = Table(title=self.title)
        for i, c in enumerate(self.columns):
            t.add_column(c.title, justify="left" if i == 0 else "right")

        def text(c: Column, v) -> str:
            if v is None:
                return ""
            if isinstance(v, Quantity):
                return v.text
            if isinstance(v, str):
                return v
            return c.show(v) if callable(c.show) else c.show.format(v)

        for i, r in enumerate(self.rows):
            if i in self.sections and i:
                t.add_section()
            t.add_row(*(text(c, v) for c, v in zip(self.columns, r)))
        return t


class Report:
    """One bench run. The table's ``run`` fills it (``sheet``, ``note``, ``check``,
    ``machine``) and steps through its work with ``step``; `emit` prints it."""

    def __init__(
        self,
        bench: str,
        *,
        as_json: bool = False,
        progress: bool = False,
        parameters: dict | None = None,
        out=None,
    ) -> None:
        self.bench = bench
        self.as_json = as_json
        self.progress = progress
        self.parameters = dict(parameters or {})
        self.out = out
        self.sheets: list[Sheet] = []
        self.notes: list[dict] = []
        self.checks: list[tuple[str, bool]] = []
        self.extra: dict[str, Any] = {}
        self.steps_total: int | None = None
        self.steps_done = 0
        self._bar: Callable[[str], None] | None = None

    # -- filled by a table -----------------------------------------------------------------
    def sheet(self, title: str, columns: Sequence[Column]) -> Sheet:
        s = Sheet(title, columns)
        self.sheets.append(s)
        return s

    def note(self, text: str, **values: Any) -> None:
        """A line under the tables; ``values`` are its numbers for scripts."""
        self.notes.append({"text": text, **values})

    def check(self, target: str, met: bool) -> None:
        self.checks.append((target, bool(met)))

    def machine(self, **extra: Any) -> None:
        """What the machine line adds to the architecture, cores and Python (backend, load...)."""
        self.extra.update(extra)

    def expect_steps(self, total: int) -> None:
        """The run has ``total`` steps: the bar (on a terminal) shows how many are done."""
        self.steps_total = total

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """One step of the run, named ``what`` on the bar while it runs."""
        if self._bar is not None:
            self._bar(what)
        yield
        self.steps_done += 1
        if self._bar is not None:
            self._bar(what)

    # -- run and printed by the command ----------------------------------------------------
    @contextmanager
    def running(self) -> Iterator[Report]:
        """While the table runs: its bar on stderr, when ``progress`` (a terminal, no -q or
        --json); steps the table did not count beforehand show as a bar without an end."""
        from engine.cli.progress_bars import step_bar

        with step_bar(f"pktx bench {self.bench}", enabled=self.progress) as update:
            self._bar = lambda doing: update(self.steps_done, self.steps_total, doing)
            try:
                yield self
            finally:
                self._bar = None

    def machine_description(self) -> dict:
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = None
        return {
            "architecture": platform.machine(),
            "cores": os.cpu_count(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "load_average": load,
            **self.extra,
        }

    def as_json_document(self, exit_status: int = 0) -> dict:
        return {
            "bench": self.bench,
            "parameters": self.parameters,
            "tables": [s.as_json() for s in self.sheets],
            "notes": self.notes,
            "checks": [{"target": t, "met": ok} for t, ok in self.checks],
            "machine": self.machine_description(),
            "exit_status": exit_status,
        }

    def emit(self, exit_status: int = 0) -> None:
        """Print the report: one JSON document, or the tables, notes, verdicts and machine."""
        if self.as_json:
            out = self.out or sys.stdout
            json.dump(self.as_json_document(exit_status), out, indent=2)
            out.write("\n")
            return
        from rich.console import Console

        console = Console(file=self.out, width=200 if self.out else None)
        for s in self.sheets:
            console.print(s.as_rich())
        for n in self.notes:
            console.print(n["text"], markup=False)
        for name, ok in self.checks:
            console.print(f"  [{'green' if ok else 'red'}]{'met' if ok else 'MISSED'}[/] {name}")
        m = self.machine_description()
        load = m.pop("load_average")
        line = f"machine: {m.pop('architecture')}, {m.pop('cores')} cores, {m.pop('python')}"
        if load is not None:
            line += f", load average {' '.join(f'{x:.2f}' for x in load)}"
        line += "".join(f", {k.replace('_', ' ')}: {v}" for k, v in m.items())
        console.print(line, markup=False)


def run_table(run: Callable[..., int], report: Report, **options: Any) -> int:
    """Run a table's ``run`` into ``report`` (its bar shown meanwhile), print it, and give the
    exit status."""
    with report.running():
        status = run(report=report, **options)
    report.emit(status)
    return status


def main(bench: str, run: Callable[..., int]) -> int:
    """``python -m benchmarks.<table>``: the table with its defaults, for a person."""
    return run_table(run, Report(bench, progress=sys.stderr.isatty()))
