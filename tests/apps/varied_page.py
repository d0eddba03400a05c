"""A varied page and a components app, driven over the real protocol; every
frame the client gets is written to a file (for tests/test_speedup.py).

    python tests/apps/varied_page.py OUT.json     # FLET_RESILIENT_SPEEDUPS=0 for stock

The page mixes inputs, buttons, nested rows, columns and containers with
padding, borders, radius, gradients, shadows and text styles, and a ListView;
clicks change, add, remove, move and replace controls. The components app
re-renders a keyed list whose length follows a `use_state`. Random strings
(the session id, service uids) are masked in the raw frames, nothing else.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import flet as ft

from flet_resilient import _flet
from flet_resilient._flet import pagebuild
from flet_resilient.testing import Action, FletClient, FletServer

ROWS = 40
MOUNTS: list[str] = []
"""Tags in the order Flet mounted them (shown on the page by "change")."""


@ft.control
class Tag(ft.Text):
    """A custom control: its build() sets its text, did_mount() logs it."""

    def build(self) -> None:
        self.value = f"tag {self.key}"

    def did_mount(self) -> None:
        super().did_mount()
        MOUNTS.append(str(self.key))


def row(i: int) -> ft.Control:
    """One list row: a container holding text, inputs and a button."""
    return ft.Container(
        key=f"row{i}",
        content=ft.Row(
            [
                ft.Text(f"row {i}", size=14, weight=ft.FontWeight.BOLD),
                ft.TextField(value=f"v{i}", label="name", width=160, dense=True),
                ft.Checkbox(label="ok", value=i % 2 == 0),
                ft.Column(
                    [Tag(key=f"tag{i}"), ft.IconButton(ft.Icons.ADD)],
                    spacing=2,
                ),
            ],
            spacing=5,
            alignment=ft.MainAxisAlignment.SPACE_BETWEEN,
        ),
        padding=ft.Padding.symmetric(horizontal=8, vertical=4),
        border=ft.Border.all(1, ft.Colors.BLUE_GREY_200),
        border_radius=ft.BorderRadius.all(6),
        bgcolor=ft.Colors.BLUE_50 if i % 3 else None,
        shadow=None if i % 5 else [ft.BoxShadow(blur_radius=2, color="black12")],
    )


def header() -> ft.Control:
    """Inputs, a dropdown and a gradient box above the list."""
    return ft.Column(
        [
            ft.Text(
                "Varied page",
                key="title",
                style=ft.TextStyle(size=20, color=ft.Colors.INDIGO, letter_spacing=1),
            ),
            ft.Row(
                [
                    ft.TextField(key="name", label="Name", hint_text="type"),
                    ft.Dropdown(
                        key="choice",
                        value="b",
                        options=[ft.DropdownOption(k, f"option {k}") for k in "abc"],
                    ),
                    ft.Switch(label="on", value=True),
                    ft.Slider(min=0, max=10, value=3),
                ],
                wrap=True,
            ),
            ft.Container(
                key="box",
                width=200,
                height=40,
                alignment=ft.Alignment.CENTER,
                gradient=ft.LinearGradient(colors=[ft.Colors.RED, ft.Colors.BLUE]),
                content=Tag(key="boxed"),
            ),
            ft.ListTile(
                leading=Tag(key="leading"),
                title=Tag(key="title-tag"),
                subtitle=ft.Text("subtitle"),
                trailing=Tag(key="trailing"),
            ),
        ]
    )


def main(page: ft.Page) -> None:
    """The varied page; buttons change, add, remove and reorder its controls."""
    rows = ft.ListView([row(i) for i in range(ROWS)], key="list", spacing=4, height=400)
    top = header()
    added = [ROWS]
    mounts = ft.Text(key="mounts")
    MOUNTS.clear()

    def change(e: ft.Event) -> None:
        title = top.controls[0]
        title.value = "Changed"
        title.style = ft.TextStyle(size=22, weight=ft.FontWeight.W_600)
        first = rows.controls[1]
        first.bgcolor = ft.Colors.AMBER_100
        first.padding = ft.Padding.all(12)
        first.content.controls[2].value = True
        first.content.controls[1].value = "edited"
        top.controls[2].content = ft.Icon(ft.Icons.STAR, color=ft.Colors.YELLOW)
        mounts.value = ",".join(MOUNTS)
        # A plain dataclass on the page: patched only if its changes are tracked.
        page.media.always_use_24_hour_format = not page.media.always_use_24_hour_format
        page.update()

    def add(e: ft.Event) -> None:
        rows.controls.insert(3, row(added[0]))
        rows.controls.append(row(added[0] + 1))
        rows.controls[5].content.controls.append(ft.Button("new", key=f"new{added[0]}"))
        added[0] += 2

    def remove(e: ft.Event) -> None:
        del rows.controls[2]
        rows.controls.pop()
        rows.controls[0].content.controls.pop(1)
        top.controls[1].controls[0].visible = False

    def reorder(e: ft.Event) -> None:
        rows.controls[:6] = list(reversed(rows.controls[:6]))
        rows.controls[6] = ft.Text("replaced", key="replaced")

    buttons = ft.Row(
        [
            ft.Button("change", key="change", on_click=change),
            ft.Button("add", key="add", on_click=add),
            ft.Button("remove", key="remove", on_click=remove),
            ft.OutlinedButton("reorder", key="reorder", on_click=reorder),
        ]
    )
    page.add(top, buttons, mounts, rows)


@ft.component
def Items() -> ft.Control:
    """A keyed list whose length and labels follow a `use_state`."""
    count, set_count = ft.use_state(2)
    items = [
        ft.Row(
            [
                ft.Text(f"item {i} of {count}", key=f"label{i}"),
                ft.Checkbox(value=i == count),
            ],
            key=f"item{i}",
        )
        for i in range(count if count % 3 else count - 1)
    ]
    return ft.Column(
        [
            ft.Text(f"count {count}", key="count", size=12 + count),
            ft.Button("more", key="more", on_click=lambda: set_count(count + 1)),
            ft.Button("fewer", key="fewer", on_click=lambda: set_count(count - 2)),
            ft.Container(ft.Column(items), padding=count),
        ]
    )


def components_main(page: ft.Page) -> None:
    page.render(Items)


def mask(frames: list[bytes]) -> list[str]:
    """The frames as hex, with the session id and service uids blanked out."""
    secrets: set[bytes] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("session_id", "uid") and isinstance(item, str):
                    secrets.add(item.encode())
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    from flet_resilient.testing import decode

    for frame in frames:
        collect(decode(frame)[1])
    masked = []
    for frame in frames:
        for secret in secrets:
            frame = frame.replace(secret, b"#" * len(secret))
        masked.append(frame.hex())
    return masked


async def step(user: FletClient, key: str, done: Any) -> None:
    """Click `key` (or type into it, then click "change"); wait for its patch."""
    before = len(user.patch_frames())
    if key.startswith("type:"):
        await user.set_props(key[5:], value="typed")
        await user.click("change")
    else:
        await user.click(key)
    await user.wait_for(lambda: len(user.patch_frames()) > before and done(user))


async def drive(app: Any, steps: list[tuple[str, Any]]) -> list[bytes]:
    """Serve `app`, click through `steps` (key, what to wait for), the raw frames."""
    async with FletServer(app) as server:
        user = FletClient(server.ws_url)
        user.raw_frames = []
        await user.connect()
        for key, done in steps:
            await step(user, key, done)
        await user.close()
        return list(user.raw_frames)


async def record(path: str) -> None:
    """Both apps' frames and whether the speed-ups were on, as JSON at `path`."""
    page = await drive(
        main,
        [
            ("change", lambda u: u.value("title") == "Changed"),
            ("add", lambda u: u.find("new40")),
            ("remove", lambda u: u.value("name", "visible") is False),
            ("reorder", lambda u: u.find("replaced")),
            ("add", lambda u: u.find("new42")),
            ("type:name", lambda u: True),
        ],
    )
    components = await drive(
        components_main,
        [
            ("more", lambda u: u.value("count") == "count 3"),
            ("more", lambda u: u.value("count") == "count 4"),
            ("fewer", lambda u: u.value("count") == "count 2"),
            ("more", lambda u: u.value("count") == "count 3"),
        ],
    )
    report = {
        "speedups": _flet.speedups_on(),
        "plans": len(pagebuild._plans),
        "patch_action": Action.PATCH_CONTROL,
        "page": mask(page),
        "components": mask(components),
    }
    with open(path, "w") as out:
        json.dump(report, out)


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1]))
