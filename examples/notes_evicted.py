"""A notes app whose state survives eviction with `@evict_idle`.

Run: python examples/notes_evicted.py   (then open the printed URL)
Add a few notes, then leave the tab alone for a minute (or close it for 30 s):
the session is evicted and its memory freed, the notes (and a half-typed one)
wait in the state store. When you come back (the page reconnects, or you
reopen the URL in the same browser), `main` rebuilds the page from the
restored notes and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import flet as ft

import flet_resilient as fr


@dataclass
class Notes:
    """Everything a user's page is built from: it is what survives eviction."""

    items: list[str] = field(default_factory=list)
    edits: int = 0  # notes added or removed so far
    draft: str = ""  # what is typed but not added yet


@fr.evict_idle(idle_ttl=60, disconnected_ttl=30, state=Notes)
async def main(page: ft.Page) -> None:
    """Build the page from this user's (possibly restored) notes."""
    page.title = "flet-resilient: notes that survive eviction"
    notes: Notes = await fr.app_state(page)
    # A fresh state is all defaults; one that came back from the store is not.
    restored = notes != Notes()

    status = ft.Text(
        "restored after eviction" if restored else "new session",
        key="status",
        color=ft.Colors.GREEN if restored else None,
    )
    edits = ft.Text(key="edits")
    entry = ft.TextField(value=notes.draft, label="New note", key="entry", expand=True)
    items = ft.Column(key="items")

    def render() -> None:
        items.controls = [
            ft.Row(
                [
                    ft.Text(text, key=f"note-{i}", expand=True),
                    ft.IconButton(
                        ft.Icons.DELETE,
                        key=f"delete-{i}",
                        on_click=lambda e, i=i: remove(i),
                    ),
                ],
                key=f"row-{i}",
            )
            for i, text in enumerate(notes.items)
        ]
        edits.value = f"{notes.edits} edit{'' if notes.edits == 1 else 's'}"

    def add(e: ft.Event) -> None:
        text = (entry.value or "").strip()
        if not text:
            return
        notes.items.append(text)
        notes.edits += 1
        entry.value = notes.draft = ""
        render()

    def remove(index: int) -> None:
        del notes.items[index]
        notes.edits += 1
        render()

    def typed(e: ft.Event) -> None:
        notes.draft = entry.value or ""  # each keystroke is also activity

    entry.on_change = typed
    entry.on_submit = add
    render()
    page.add(
        status,
        ft.Row([entry, ft.Button("Add", key="add", on_click=add)]),
        items,
        edits,
    )


if __name__ == "__main__":
    fr.serve(main, port=int(os.environ.get("PORT", "8553")))  # prints the URL
