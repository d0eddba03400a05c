"""A field-inspection form that survives a phone's flaky connection.

Run: python examples/field_form.py   (then open the printed URL)

An inspector fills in site, asset, reading and notes, picks a condition, ticks
"hazard", and presses Save: the record is appended to the list below and the
form is cleared for the next one, with the cursor back in "Site".

`@buffer_reconnects()` keeps the session when the phone switches networks or
its socket goes half-open (a quick reconnect would otherwise start a fresh,
empty session), so typed-but-unsaved input and saved records survive drops of
up to 30 s, and the "focus Site" after a save (an `invoke_method`) reaches the
phone even if it was sent into a dead socket.

Environment: `PORT` (default 8552). Controls carry keys: `site`, `asset`,
`reading`, `notes`, `condition`, `hazard`, `save`, `saved` (the counter),
`records` (the list), `status`.
"""

from __future__ import annotations

import os
import time

import flet as ft

import flet_resilient as fr

CONDITIONS = ("good", "fair", "poor", "out of service")


@fr.buffer_reconnects()
async def main(page: ft.Page) -> None:
    """One inspector's form and the records saved in this session."""
    page.title = "Field inspection"
    page.scroll = ft.ScrollMode.AUTO

    site = ft.TextField(label="Site", key="site", autofocus=True)
    asset = ft.TextField(label="Asset ID", key="asset")
    reading = ft.TextField(
        label="Meter reading", key="reading", keyboard_type=ft.KeyboardType.NUMBER
    )
    notes = ft.TextField(label="Notes", key="notes", multiline=True, min_lines=2)
    condition = ft.Dropdown(
        label="Condition",
        key="condition",
        value=CONDITIONS[0],
        options=[ft.DropdownOption(c) for c in CONDITIONS],
    )
    hazard = ft.Checkbox(label="Safety hazard", key="hazard", value=False)
    saved = ft.Text("0", key="saved", size=24, weight=ft.FontWeight.BOLD)
    status = ft.Text("", key="status")
    records = ft.Column(key="records")

    async def on_save(e: ft.Event) -> None:
        if not (site.value or "").strip():
            status.value = "Site is required"
            site.error_text = "required"
            page.update()
            return
        record = (
            f"{time.strftime('%H:%M:%S')}  {site.value} / {asset.value or '-'}: "
            f"{condition.value}, reading {reading.value or '-'}"
            f"{', HAZARD' if hazard.value else ''}"
            f"{f' - {notes.value}' if notes.value else ''}"
        )
        number = len(records.controls) + 1
        records.controls.insert(0, ft.Text(record, key=f"record-{number}"))
        saved.value = str(number)
        status.value = f"record {number} saved"
        site.error_text = None
        for field in (asset, reading, notes):
            field.value = ""
        hazard.value = False
        page.update()
        # Site stays filled (usually the same for the next asset); the cursor
        # goes to Asset ID. An invoke_method: replayed after a drop.
        await asset.focus()

    page.add(
        ft.Row([ft.Text("Saved records:"), saved]),
        site,
        asset,
        reading,
        condition,
        hazard,
        notes,
        ft.Row([ft.Button("Save", key="save", on_click=on_save), status]),
        ft.Divider(),
        records,
    )


def create_app() -> object:
    """The ASGI app (`uvicorn examples.field_form:create_app --factory`)."""
    import flet_web.fastapi as flet_fastapi

    return flet_fastapi.app(main, no_cdn=True)


if __name__ == "__main__":
    fr.serve(main, port=int(os.environ.get("PORT", "8552")))
