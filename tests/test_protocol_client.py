"""The real-protocol client against a real Flet app under uvicorn."""

import flet as ft

from flet_resilient.testing import FletClient, FletServer


def counter_app(page: ft.Page) -> None:
    count = ft.Text("0", key="count")
    items = ft.Column(key="items")

    def increment(e: ft.Event) -> None:
        count.value = str(int(count.value) + 1)

    def add_item(e: ft.Event) -> None:
        items.controls.insert(0, ft.Text(f"item {len(items.controls)}"))

    def remove_first(e: ft.Event) -> None:
        items.controls.pop(0)

    page.add(
        count,
        items,
        ft.Button("+", key="inc", on_click=increment),
        ft.Button("add", key="add", on_click=add_item),
        ft.Button("remove", key="remove", on_click=remove_first),
    )


def texts(client: FletClient) -> list[str]:
    return [c["value"] for c in client.find("items").get("controls", [])]


async def test_mirror_follows_clicks_adds_and_removes():
    async with FletServer(counter_app) as server, FletClient(server.ws_url) as user:
        await user.wait_for(lambda: user.value("count") == "0")
        for _ in range(3):
            await user.click("inc")
        await user.wait_for(lambda: user.value("count") == "3")
        for _ in range(3):
            await user.click("add")
        await user.wait_for(lambda: len(texts(user)) == 3)
        assert texts(user) == ["item 2", "item 1", "item 0"]
        await user.click("remove")
        await user.wait_for(lambda: len(texts(user)) == 2)
        assert texts(user) == ["item 1", "item 0"]
        assert user.session_id
        assert not user.errors
