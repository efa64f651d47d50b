"""The typed keys of the dashboard's aiohttp application, in one place."""

from __future__ import annotations

from aiohttp import web

from vectis.dashboard.core import Dashboard
from vectis.dashboard.dist import WorkerDist

DASHBOARD = web.AppKey("dashboard", Dashboard)
DIST = web.AppKey("dist", WorkerDist)
