"""The operations console (`examples/ops_console.py`) written idiomatically for
NiceGUI, so `bench_capacity.py` compares like with like.

Run: python benchmarks/nicegui_ops_console.py   ($PORT, default 8555; the
`bench` extra installs NiceGUI)

The same services, live figures, heavy report and form as the Flet app
(`examples/ops_data.py`): a `ui.timer` refreshes the live panel every second,
`run.cpu_bound` runs the SLA report in NiceGUI's process pool (spawned workers,
as NiceGUI advises), the search box debounces in the browser (Quasar's
`debounce` prop) and a `ui.refreshable` redraws the list. Elements the load
generator uses carry a `data-key` prop (`ack`, `acked`, `report`,
`report-result`), as the Flet app's controls carry keys.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from nicegui import run, ui

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/
from examples import ops_data

SERVICES = ops_data.services(ops_data.rows_wanted())
LOG_LINES = 5
PING_TIMEOUT = "%s: Client is gone, closing socket"  # engine.io's log message


def log_ping_timeouts() -> None:
    """Write engine.io's ping-timeout closes (only those: it logs every packet
    at INFO) to stderr, the benchmark's server log, so a lost session has its
    reason there."""
    log = logging.getLogger("engineio.server")
    log.addFilter(lambda record: record.msg == PING_TIMEOUT)
    log.setLevel(logging.INFO)
    if not log.handlers:
        log.addHandler(logging.StreamHandler())


def live_panel() -> None:
    """Four figures, refreshed by a timer once a second."""
    with ui.row().classes("gap-6 p-2 bg-gray-100"):
        labels = {name: ui.label() for name in ops_data.live_figures()}

    def tick() -> None:
        for name, value in ops_data.live_figures().items():
            labels[name].set_text(value)

    tick()
    ui.timer(1.0, tick)


def report_section() -> None:
    """The heavy report, run in NiceGUI's process pool."""

    async def on_report() -> None:
        result.set_text("building the SLA report...")
        result.set_text(
            await run.cpu_bound(
                ops_data.sla_report, len(SERVICES), ops_data.report_samples()
            )
        )

    with ui.row():
        ui.button("SLA report", on_click=on_report).props("data-key=report")
        result = ui.label().props("data-key=report-result")


def ack_form() -> None:
    """Acknowledge an incident: a note, a severity, a button, the latest lines."""
    lines: list[str] = []
    acked = [0]

    def on_ack() -> None:
        acked[0] += 1
        text = (note.value or "").strip() or "(no note)"
        lines.insert(0, f"#{acked[0]} [{severity.value}] {text}")
        del lines[LOG_LINES:]
        note.set_value("")
        counter.set_text(f"{acked[0]} acknowledged")
        log.refresh()

    with ui.row():
        note = ui.input("Note")
        severity = ui.select(list(ops_data.SEVERITIES), value=ops_data.SEVERITIES[0])
        ui.button("Acknowledge", on_click=on_ack).props("data-key=ack")
    counter = ui.label("0 acknowledged").props("data-key=acked")

    @ui.refreshable
    def log() -> None:
        for line in lines:
            ui.label(line)

    log()


def service_list() -> None:
    """The filters and the list of services they let through."""
    filters = {"query": "", "region": "all"}

    @ui.refreshable
    def rows() -> None:
        found = ops_data.matching(SERVICES, filters["query"], filters["region"])
        ui.label(f"{len(found)} of {len(SERVICES)} services")
        for row in found:
            name, region, status = ops_data.row_text(row)
            with ui.row().classes("gap-2"):
                ui.label(name).classes("w-44")
                ui.label(region).classes("w-20")
                ui.label(status).style(f"color: {ops_data.STATUS_COLORS[row.status]}")

    def on_filter(key: str, value: str) -> None:
        filters[key] = value or ""
        rows.refresh()

    with ui.row():
        ui.input(
            "Search services", on_change=lambda e: on_filter("query", e.value)
        ).props("debounce=300")
        ui.select(
            list(ops_data.REGIONS),
            value="all",
            on_change=lambda e: on_filter("region", e.value),
        )
    rows()


@ui.page("/")
def index() -> None:
    """One user's console."""
    ui.label("Operations console").classes("text-2xl")
    live_panel()
    report_section()
    ack_form()
    service_list()


if __name__ in {"__main__", "__mp_main__"}:
    port = int(os.environ.get("PORT", "8555"))
    if __name__ == "__main__":  # the load test reads the port from this line
        print(f"NiceGUI ops console: http://127.0.0.1:{port}", flush=True)
    run.process_pool_start_method = "spawn"  # NiceGUI advises it (fork: sockets)
    log_ping_timeouts()
    ui.run(
        host="127.0.0.1",
        port=port,
        reload=False,
        show=False,
        title="Operations console",
        uvicorn_logging_level="warning",
    )
