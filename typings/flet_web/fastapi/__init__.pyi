from flet_web.fastapi.app import app as app
from flet_web.fastapi.flet_app import FletApp as FletApp
from flet_web.fastapi.flet_app_manager import app_manager as app_manager
from flet_web.fastapi.flet_fastapi import FastAPI as FastAPI
