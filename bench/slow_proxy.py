"""A TCP proxy on 127.0.0.1 that holds every chunk the server sends for `delay` seconds before
passing it on: each answer of the server behind it (a bind, a search) arrives `delay` late, as
from a struggling directory, while what the client sends goes through at once. Runs an asyncio
loop on a thread of its own.

    with SlowProxy(("127.0.0.1", slapd_port), delay=1.0) as proxy:
        proxy.port                  # connect here
"""

from __future__ import annotations

import asyncio
import threading


class SlowProxy:
    def __init__(self, target: tuple[str, int], delay: float):
        self.target = target
        self.delay = delay
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the slow proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _client(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w, 0.0), _pipe(server_r, client_w, self.delay),
                             return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk `delay` seconds after it was read (in order: a chunk
    read while another waits is not held for both delays)."""
    loop = asyncio.get_running_loop()
    held: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await held.get()
            if data is None:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            held.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    held.put_nowait((0.0, None))
    try:
        await sender
    except OSError:
        pass
    writer.close()
