from typing import Any

import fastapi

class FastAPI(fastapi.FastAPI):
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
