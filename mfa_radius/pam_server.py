"""The daemon's Unix-socket front for the PAM module (skeleton; the full server follows)."""

from __future__ import annotations

import asyncio
import os

from .config import Config


class PamSocketServer:
    def __init__(self, config: Config, verifier):
        self.config = config
        self.verifier = verifier
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        path = self.config.pam.socket
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        self._server = await asyncio.start_unix_server(self._handle, path=path)
        os.chmod(path, 0o666)

    async def _handle(self, reader, writer) -> None:
        writer.close()

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
