"""A scripted driver for sans-I/O flows: no sockets, a fake clock.

``Script(answer).run(flow)`` runs a flow the way :func:`authlayer._http.run_sync` does, except
that each :class:`Send` is answered by ``answer(request)`` and takes ``latency`` seconds of the
fake clock (:meth:`Script.clock`, to be given to the flow's ``FlowContext``), each
:class:`Sleep` moves the clock on by its seconds, and each :class:`Call` runs at once. What was
sent, and when, is kept in :attr:`Script.sent`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar, Union

from authlayer._actions import Action, drive
from authlayer._http import ConnectionFailed, Flow, HttpRequest, HttpResponse, Send, Sleep

T = TypeVar("T")
Answer = Callable[[HttpRequest], Union[HttpResponse, ConnectionFailed]]


def json_answer(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())


class Script:
    def __init__(self, answer: Answer, *, start: float = 1_700_000_000.0,
                 latency: float = 0.0) -> None:
        self.now = start
        self.answer = answer
        self.latency = latency
        self.sent: list[tuple[float, HttpRequest]] = []  # (clock when sent, request)
        self.actions: list[Any] = []

    def clock(self) -> float:
        return self.now

    def run(self, flow: Flow[T]) -> T:
        return drive(flow, self.perform)

    def perform(self, action: Action) -> Any:
        self.actions.append(action)
        if isinstance(action, Send):
            self.sent.append((self.now, action.request))
            self.now += self.latency  # the answer takes this long to come
            return self.answer(action.request)
        if isinstance(action, Sleep):
            self.now += action.seconds
            return None
        return action.fn()
