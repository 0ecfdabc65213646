"""A learning-materials dashboard (Leermiddelendashboard) that offers the Progress API and a usage pull.

It is the upstream behind a gateway node: it trusts the node's identity headers and nothing else, and it
keeps what it receives in memory so that the demo and the tests can see exactly what arrived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_VERSION = "1.0.0"
STATUSES = {"not-started", "started", "completed", "abandoned"}


@dataclass
class Received:
    """What reached the dashboard: bodies and the headers the gateway passed along."""

    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


RECEIVED = web.AppKey("received", Received)


def _edu(status: str, message: str, http: int) -> web.Response:
    return web.json_response(
        {"status": status, "statusMessage": message}, status=http, headers={"API-Version": API_VERSION}
    )


async def put_progress(request: web.Request) -> web.Response:
    received = request.app[RECEIVED]
    received.headers.append(dict(request.headers))
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _edu("0011", "body is not JSON", 400)
    if not isinstance(body, dict) or body.get("id") != request.match_info["id"]:
        return _edu("0011", "id in the path and the body differ", 400)
    if not isinstance(body.get("status"), str) or body["status"] not in STATUSES:
        return _edu("0011", f"status must be one of {sorted(STATUSES)}", 400)
    created = body["id"] not in received.progress
    received.progress[body["id"]] = body
    return _edu("0001", "Created", 201) if created else _edu("0000", "OK", 200)


async def post_results(request: web.Request) -> web.Response:
    received = request.app[RECEIVED]
    received.headers.append(dict(request.headers))
    try:
        received.results.append(await request.json())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _edu("0011", "body is not JSON", 400)
    return _edu("0002", "Accepted", 202)


async def get_usage(request: web.Request) -> web.Response:
    """Usage per school: the progress records received, with more fields than a puller may get (the gateway
    cuts the answer to the catalogue's allowlist)."""
    received = request.app[RECEIVED]
    school = request.query.get("school", "")
    records = [
        {
            "student": {"id": r["student"]["id"], "group": "2A"},
            "courseId": r.get("courseId"),
            "assignableUnitId": r.get("assignableUnitId"),
            "status": r.get("status"),
            "updatedAt": "2026-11-23T09:00:00Z",
            "internalNote": "never leaves the dashboard",
        }
        for r in received.progress.values()
        if _school_of(r) == school and isinstance(r.get("student"), dict)
    ]
    return web.json_response({"school": school, "records": records}, headers={"API-Version": API_VERSION})


def _school_of(record: dict[str, Any]) -> object:
    school = record.get("school")
    return school.get("organisationMasterIdentifier") if isinstance(school, dict) else None


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def received_exchange_ids(request: web.Request) -> web.Response:
    """What arrived, by the gateway's exchange id: lets a test in another process compare with the log."""
    ids = [h["Edu-Exchange-Id"] for h in request.app[RECEIVED].headers if "Edu-Exchange-Id" in h]
    return web.json_response(ids)


@web.middleware
async def _edu_v_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own refusals (no route, another method) in the Edu-V format, as the API's own are."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = _edu("0099", exc.reason, exc.status)
        if "Allow" in exc.headers:
            answer.headers["Allow"] = exc.headers["Allow"]
        return answer


def create_dashboard() -> web.Application:
    app = web.Application(middlewares=[_edu_v_errors])
    app[RECEIVED] = Received()
    app.router.add_put("/v1/progress/{id}", put_progress)
    app.router.add_post("/v1/results", post_results)
    app.router.add_get("/v1/usage", get_usage)
    app.router.add_get("/ping", ping)
    app.router.add_get("/_sample/received", received_exchange_ids)
    return app


if __name__ == "__main__":  # python -m connectors.samples.dashboard PORT
    import sys

    web.run_app(create_dashboard(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
