"""How a simulated device takes a command (远程执法处置): it listens on its own
`offsite/v1/{domain}/{device_id}/cmd`, carries the command out and answers on `.../cmd/ack`
with `{"command_id", "ok", "detail"}`, the contract `offsite.casework.commands` records.

A real device refuses what it cannot do rather than staying silent: an unknown command, a
malformed one, or one that arrives after its deadline (the gateway has recorded it as timed
out by then; acting on it late would surprise the officer who sent it) is answered with
`ok: false` and the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from offsite.gateway.payloads import CommandAck

_LOG = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], tuple[bool, str]]
"""(command, params) -> (carried out, what the device says about it)."""


class CommandRequest(BaseModel):
    """What the gateway publishes on `.../cmd` (runtime.send_command)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: str = Field(min_length=1, max_length=64)
    command: str = Field(min_length=1, max_length=64)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    deadline: AwareDatetime | None = Field(None, description="not carried out after this")


def cmd_topic(domain: str, device_id: str) -> str:
    return f"offsite/v1/{domain}/{device_id}/cmd"


def answer(payload: bytes, handler: Handler, now: datetime) -> CommandAck | None:
    """The device's answer to one command message; None when it names no command id to
    answer to (nothing can be correlated, so the device only logs it)."""
    try:
        raw = json.loads(payload)
    except ValueError:
        _LOG.warning("command that is not JSON ignored: %r", payload[:200])
        return None
    command_id = raw.get("command_id") if isinstance(raw, dict) else None
    if not isinstance(command_id, str) or not 0 < len(command_id) <= 64:
        _LOG.warning("command without a usable command_id ignored: %r", payload[:200])
        return None
    try:
        request = CommandRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return CommandAck(command_id=command_id, ok=False, detail=f"malformed command: {problems}")
    if request.deadline is not None and now > request.deadline:
        return CommandAck(
            command_id=command_id,
            ok=False,
            detail=f"arrived after its deadline {request.deadline.isoformat()}; not carried out",
        )
    ok, detail = handler(request.command, dict(request.params))
    return CommandAck(command_id=command_id, ok=ok, detail=detail[:500])


def unknown(command: str, kind: str, known: tuple[str, ...]) -> tuple[bool, str]:
    article = "an" if kind[0] in "aeiou" else "a"
    return False, f"unknown command {command!r}; {article} {kind} takes {', '.join(known)}"
