"""An operations console: the reference app of the capacity benchmark.

Run: python examples/ops_console.py   (then open the printed URL)

What a real internal tool looks like: a list of a few hundred services with a
search box (debounced) and a region filter, a live panel updated every second,
a heavy "SLA report" (pure-Python CPU work, offloaded to a worker process) and
an acknowledge form. Every flet-resilient mitigation is one decorator:

- `@offload` runs the report off the event loop (plain Flet would block
  every user for the report's duration);
- `@coalesce_updates` merges the live panel's and the handlers' updates;
- `@evict_idle` / `app_state` free idle tabs and keep the filters, the form's
  draft and the acknowledgements in a store (Redis when `$REDIS_URL` is set,
  as behind a load balancer);
- `@buffer_reconnects` keeps a session over a quick reconnect;
- `@debounce` runs the search once typing pauses.

With `FLET_RESILIENT_DISABLE=1` the same file runs as plain Flet (the
decorators pass through, `@offload` runs inline), which is how the benchmark
measures both. Its NiceGUI twin is `benchmarks/nicegui_ops_console.py`;
the data both show is `examples/ops_data.py`.

Environment: `PORT` (default 8554), `OPS_ROWS`, `OPS_REPORT_SAMPLES`
(see ops_data). Keys: `search`, `region`, `rows` (the list), `shown`,
`clock`, `requests`, `errors`, `incidents`, `report`, `report-result`,
`note`, `severity`, `ack`, `acked`, `log`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import flet as ft

import flet_resilient as fr

if __package__:  # imported as examples.ops_console (load tests, benchmarks)
    from . import ops_data
else:  # python examples/ops_console.py
    import ops_data  # type: ignore[no-redef]

SERVICES = ops_data.services(ops_data.rows_wanted())
LOG_LINES = 5  # acknowledgements shown under the form

build_report = fr.offload(
    ops_data.sla_report, timeout=60, per_session=1, policy="latest"
)


@dataclass
class Console:
    """What a user's console is built from: it survives eviction and workers."""

    query: str = ""
    region: str = "all"
    note: str = ""
    acked: int = 0
    log: list[str] = field(default_factory=list)


def store() -> fr.StateStore | None:
    """Redis when the app runs on several workers ($REDIS_URL), else the default."""
    url = os.environ.get("REDIS_URL")
    return fr.RedisStore(url) if url else None


def service_row(row: ops_data.Service) -> ft.Row:
    """One service: name, region, status (coloured)."""
    name, region, status = ops_data.row_text(row)
    return ft.Row(
        [
            ft.Text(name, width=170),
            ft.Text(region, width=80),
            ft.Text(status, color=ops_data.STATUS_COLORS[row.status]),
        ]
    )


class LivePanel:
    """Four figures refreshed once a second while the user is connected."""

    def __init__(self) -> None:
        self.texts = {
            name: ft.Text(key=name, size=16)
            for name in ("clock", "requests", "errors", "incidents")
        }
        self.control = ft.Container(
            ft.Row(list(self.texts.values()), spacing=24),
            padding=10,
            bgcolor=ft.Colors.SURFACE_CONTAINER_HIGHEST,
        )

    def show(self) -> None:
        for name, value in ops_data.live_figures().items():
            self.texts[name].value = value

    async def run(self, page: ft.Page) -> None:
        while True:
            await fr.connected(page)  # pause while the user is away
            self.show()
            self.control.update()
            await asyncio.sleep(1.0)


@fr.buffer_reconnects(window=30)
@fr.evict_idle(idle_ttl=900, disconnected_ttl=120, state=Console, store=store())
@fr.coalesce_updates(max_hz=20)
async def main(page: ft.Page) -> None:
    """Build one user's console from their (possibly restored) state."""
    page.title = "Operations console"
    page.scroll = ft.ScrollMode.AUTO
    state: Console = await fr.app_state(page)
    live = LivePanel()
    live.show()
    rows = ft.Column(key="rows", spacing=2)
    shown = ft.Text(key="shown")

    def render() -> None:
        found = ops_data.matching(SERVICES, state.query, state.region)
        rows.controls = [service_row(row) for row in found]
        shown.value = f"{len(found)} of {len(SERVICES)} services"

    @fr.debounce(0.3)
    def on_search(e: ft.Event) -> None:
        state.query = search.value or ""
        render()
        page.update()

    def on_region(e: ft.Event) -> None:
        state.region = region.value or "all"
        render()
        page.update()

    search = ft.TextField(
        label="Search services", key="search", value=state.query, on_change=on_search
    )
    region = ft.Dropdown(
        label="Region",
        key="region",
        value=state.region,
        options=[ft.DropdownOption(r) for r in ops_data.REGIONS],
        on_select=on_region,
    )
    render()
    page.add(
        ft.Text("Operations console", size=24),
        live.control,
        report_section(),
        ack_form(state),
        ft.Row([search, region, shown]),
        rows,
    )
    page.run_task(live.run, page)


def report_section() -> ft.Row:
    """The heavy report's button and its result."""
    result = ft.Text("", key="report-result")

    async def on_report(e: ft.Event) -> None:
        result.value = "building the SLA report..."
        result.update()
        try:
            samples = ops_data.report_samples()
            result.value = await build_report(len(SERVICES), samples)
        except fr.JobDropped:
            return  # a newer click replaced this one
        result.update()

    return ft.Row([ft.Button("SLA report", key="report", on_click=on_report), result])


def ack_form(state: Console) -> ft.Column:
    """Acknowledge an incident: a note, a severity, a button, the latest lines."""
    note = ft.TextField(label="Note", key="note", value=state.note, expand=True)
    severity = ft.Dropdown(
        key="severity",
        value=ops_data.SEVERITIES[0],
        options=[ft.DropdownOption(s) for s in ops_data.SEVERITIES],
        width=140,
    )
    acked = ft.Text(f"{state.acked} acknowledged", key="acked")
    log = ft.Column([ft.Text(line) for line in state.log], key="log", spacing=0)

    def on_note(e: ft.Event) -> None:
        state.note = note.value or ""

    def on_ack(e: ft.Event) -> None:
        state.acked += 1
        line = f"#{state.acked} [{severity.value}] {state.note.strip() or '(no note)'}"
        state.log = [line, *state.log][:LOG_LINES]
        state.note = note.value = ""
        acked.value = f"{state.acked} acknowledged"
        log.controls = [ft.Text(text) for text in state.log]
        form.update()

    note.on_change = on_note
    form = ft.Column(
        [
            ft.Row(
                [note, severity, ft.Button("Acknowledge", key="ack", on_click=on_ack)]
            ),
            acked,
            log,
        ]
    )
    return form


if __name__ == "__main__":
    fr.serve(main, port=int(os.environ.get("PORT", "8554")))  # prints the URL
