"""What a server refuses before any request reaches its app, shared by the node and the register service.

A request aiohttp cannot parse (a header byte HTTP does not allow, a line past its limit) and a handler that failed
never reach an app's routes or middleware, and aiohttp answers them in plain text. `answer_refusals_with(server,
answer)` makes every connection handler of `server` answer them with `answer(status, message)` instead; the node
and the register service answer Edu-V. `ConnectionLimit` turns away connections past a limit as they arrive."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = structlog.get_logger("edugate.connections")

# (status, aiohttp's message or None) -> the answer; called for 4xx and 5xx alike
Answer = Callable[[int, str | None], web.StreamResponse]


def answer_refusals_with(server: web.Server, answer: Answer) -> None:
    """From now on the connection handlers `server` makes answer aiohttp's own refusals with `answer`."""

    class Refusing(RequestHandler):
        __slots__ = ()

        def handle_error(
            self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
        ) -> web.StreamResponse:
            if status >= 500:
                super().handle_error(request, status, exc, message)  # aiohttp's traceback, and its late-answer check
            elif request.writer.output_size > 0:  # aiohttp's check: too late for an answer
                raise ConnectionError("a response is sent already, cannot send another with the error message")
            # (a client's unparseable request is its own doing: `answer` logs it, with no traceback)
            response = answer(status, message)
            response.force_close()
            return response

    class RefusingServer(type(server)):  # type: ignore[misc]
        def __call__(self) -> RequestHandler:
            return Refusing(self, loop=self._loop, **self._kwargs)

    server.__class__ = RefusingServer  # the same server; only the class of its connections' handlers differs


class ConnectionLimit:
    """At most `limit` client connections open at once, so that clients cannot take the descriptors a server needs
    for its own files and peers: one more is turned away as it arrives, counted (`on_turned_away`, for metrics),
    and logged at the 1st, 2nd, 4th, 8th... time, so that a flood is said without flooding the log."""

    def __init__(self, limit: int, *, on_turned_away: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.turned_away = 0
        self._on_turned_away = on_turned_away

    def admits(self, open_now: int) -> bool:
        """Whether a connection that arrives while `open_now` are open may stay (if not, it is counted as refused)."""
        if open_now < self.limit:
            return True
        self.turned_away += 1
        self._on_turned_away()
        if self.turned_away & (self.turned_away - 1) == 0:
            log.warning("connections refused: too many open", limit=self.limit, refused_so_far=self.turned_away)
        return False
