import asyncio
from typing import Any

from fastapi import WebSocket
from flet.app import AppCallable
from flet.messaging.connection import Connection
from flet.messaging.protocol import Message
from flet.messaging.session import Session
from flet_web.fastapi.flet_app_manager import app_manager as app_manager

class FletApp(Connection):
    # Set by `handle()` for the socket's lifetime (None again after it).
    _FletApp__websocket: WebSocket | None
    _FletApp__send_queue: asyncio.Queue[bytes | None] | None
    _FletApp__client_ip: str
    # From the constructor.
    _FletApp__main: AppCallable
    _FletApp__session_timeout_seconds: int
    # Set by REGISTER_CLIENT.
    _FletApp__session: Session | None
    async def handle(self, websocket: WebSocket) -> None: ...
    def send_message(self, message: Message) -> None: ...
    async def _FletApp__send_loop(self) -> None: ...
    async def _FletApp__receive_loop(self) -> None: ...
    async def _FletApp__on_message(self, data: Any) -> None: ...
    def _FletApp__get_unique_session_id(self, session_id: str) -> str: ...
