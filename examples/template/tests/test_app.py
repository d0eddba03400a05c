"""The template app, driven by simulated users over Flet's real protocol."""


async def test_pages_switch_and_the_dashboard_is_live(flet_client):
    user = flet_client
    await user.wait_for(lambda: int(user.value("live")) > 5)
    await user.click("nav_report")
    await user.wait_for(lambda: user.value("report_result") == "No report yet")
    await user.click("nav_dashboard")
    await user.wait_for(lambda: int(user.value("live")) > 10)


async def test_report_is_built_off_the_event_loop(flet_client, flet_connect):
    user, other = flet_client, await flet_connect()
    await user.click("nav_report")
    await user.click("generate")
    # Another user's dashboard keeps updating while the report is built.
    start = int(await _live(other))
    await other.wait_for(lambda: int(other.value("live")) > start + 5)
    await user.wait_for(
        lambda: str(user.value("report_result")).startswith("report over"), timeout=60
    )


async def test_notes_survive_a_dropped_connection(flet_client, flet_proxy):
    user = flet_client
    await user.click("nav_notes")
    await user.set_props("note", value="buy milk")
    await user.click("save")
    await user.wait_for(lambda: _notes(user) == ["buy milk"])
    flet_proxy.blackhole()  # the phone's link goes silent
    again = await user.reconnect()
    assert again.session_id == user.session_id
    await again.wait_for(lambda: _notes(again) == ["buy milk"])
    await again.close()


async def _live(client) -> str:
    await client.wait_for(lambda: client.value("live") is not None)
    return client.value("live")


def _notes(client) -> list[str]:
    return [c.get("value") for c in client.find("notes").get("controls", [])]
