"""What aiohttp answers by itself, in the server's own error format: a request it cannot parse (a header byte HTTP
does not allow, a line past its limit) and a handler that failed never reach an app's routes or middleware, and
aiohttp answers them in plain text. `answer_refusals_with(server, answer)` makes every connection handler of
`server` answer them with `answer(status, message)` instead; the node and the register service answer Edu-V."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

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
