"""The typed keys of the dashboard's aiohttp application, in one place."""

from __future__ import annotations

from aiohttp import web

from vectis.dashboard.dist import WorkerDist
from vectis.dashboard.service import Dashboard

DASHBOARD = web.AppKey("dashboard", Dashboard)
DIST = web.AppKey("dist", WorkerDist)
