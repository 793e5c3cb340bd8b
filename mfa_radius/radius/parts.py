"""What RadiusServer provides to the parts mixed into it (steps.py, relay.py): declared once, so
each part type-checks against the server it runs in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..verifier import Verifier
from .dedup import DuplicateCache
from .job import Job


class ServerParts:
    """The attributes and methods of RadiusServer that its parts call (server.py defines them)."""

    verifier: Verifier
    dedup: DuplicateCache
    drops: Any  # server.DropLog
    _backends: dict[str, Any]  # the password backends by name, of [radius] and of the clients
    ledger: Any  # shared.ReplyLedger when the store is shared by several nodes, else None

    if TYPE_CHECKING:
        def _verify(self, job: Job, code: bytes, password_only: bool = False) -> None: ...

        def _reject(self, job: Job, reason: str) -> None: ...

        def _challenge(self, job: Job, message: str | None = None, kind: str = "code",
                       reason: str = "password_ok", with_state: bool = True,
                       data: dict | None = None) -> None: ...
