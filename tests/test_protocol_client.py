"""The real-protocol client and the pytest plugin's fixtures, on a real app."""

import flet as ft
import pytest

from flet_resilient.testing import Action, FletClient, FletServer


def counter_app(page: ft.Page) -> None:
    count = ft.Text("0", key="count")
    items = ft.Column(key="items")

    def increment(e: ft.Event) -> None:
        count.value = str(int(count.value) + 1)

    def add_item(e: ft.Event) -> None:
        items.controls.insert(0, ft.Text(f"item {len(items.controls)}"))

    def remove_first(e: ft.Event) -> None:
        items.controls.pop(0)

    def swap(e: ft.Event) -> None:
        items.controls.reverse()

    page.add(
        count,
        items,
        ft.Button("+", key="inc", on_click=increment),
        ft.Button("add", key="add", on_click=add_item),
        ft.Button("remove", key="remove", on_click=remove_first),
        ft.Button("swap", key="swap", on_click=swap),
    )


@pytest.fixture
def flet_main():
    return counter_app


def texts(client: FletClient) -> list[str]:
    return [c["value"] for c in client.find("items").get("controls", [])]


async def test_mirror_follows_clicks_adds_moves_and_removes(flet_client):
    user = flet_client
    for _ in range(3):
        await user.click("inc")
    await user.wait_for(lambda: user.value("count") == "3")
    for _ in range(3):
        await user.click("add")
    await user.wait_for(lambda: len(texts(user)) == 3)
    assert texts(user) == ["item 2", "item 1", "item 0"]
    await user.click("swap")
    await user.wait_for(lambda: texts(user) == ["item 0", "item 1", "item 2"])
    await user.click("remove")
    await user.wait_for(lambda: len(texts(user)) == 2)
    assert texts(user) == ["item 1", "item 2"]
    assert user.session_id
    assert not user.errors


async def test_each_simulated_user_has_its_own_session(flet_client, flet_connect):
    other = await flet_connect()
    await flet_client.click("inc")
    await flet_client.wait_for(lambda: flet_client.value("count") == "1")
    assert other.session_id != flet_client.session_id
    await other.wait_for(lambda: other.value("count") == "0")


async def test_reconnect_after_a_clean_close_gets_the_session_back(flet_client):
    await flet_client.click("inc")
    await flet_client.wait_for(lambda: flet_client.value("count") == "1")
    await flet_client.close()
    again = await flet_client.reconnect()
    await again.wait_for(lambda: again.value("count") == "1")
    assert again.session_id == flet_client.session_id
    await again.close()


def test_a_server_with_nothing_running_stops_cleanly():
    server = FletServer(lambda page: None).start()
    server.stop()
    assert server.loop.is_closed()


async def test_removed_controls_leave_the_mirror(flet_client):
    user = flet_client
    for _ in range(2):
        await user.click("add")
    await user.wait_for(lambda: len(texts(user)) == 2)
    ids = {c["_i"] for c in user.find("items")["controls"]}
    await user.click("remove")
    await user.wait_for(lambda: len(texts(user)) == 1)
    remaining = {c["_i"] for c in user.find("items")["controls"]}
    assert all(i not in user.controls for i in ids - remaining)


async def test_patches_for_controls_no_longer_mirrored_are_ignored(flet_client):
    user = flet_client
    await user.wait_for(lambda: user.value("count") == "0")
    # What a page switch can produce: a patch for a subtree the client dropped.
    stale = {"id": 10**9, "patch": [[0], [0, 0, "value", "x"]]}
    await user._apply(Action.PATCH_CONTROL, stale)
    assert user.stale_patches == 1
    await user.click("inc")  # the mirror still works
    await user.wait_for(lambda: user.value("count") == "1")


async def test_a_click_on_a_closed_socket_raises_connection_error(flet_client):
    """As `wait_for` does: a load test's user whose socket the server closed
    (a rebalance's 1012) is then retired, not a crash of the whole run."""
    await flet_client.wait_for(lambda: flet_client.find("inc"))
    await flet_client.close()
    with pytest.raises(ConnectionError):
        await flet_client.click("inc")
