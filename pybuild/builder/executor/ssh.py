"""`RUN --mount=type=ssh`: relays from the build's scratch dir to the user's agent."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os


class SSHForwarder:
    """A unix socket in the build's scratch dir that relays every connection to the agent
    socket given with --ssh (BuildKit forwards the agent through its session the same
    way), so the step never needs access to the user's socket dir.

    One relay per agent and (uid, gid, mode): the daemon gives the relay's socket the
    owner and mode the mount asks for, so steps that ask for different ones must not
    share a socket."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, int, int, int], tuple[asyncio.AbstractServer, str]] = {}
        self._lock = asyncio.Lock()

    async def socket_for(self, agent: str, directory: str, owner: tuple[int, int] | None, *,
                         uid: int = 0, gid: int = 0, mode: int = 0o600) -> str:
        """The relay's socket path. `owner`: host ids to give it first (for a root build,
        the namespace's root, so that the daemon may re-own it)."""
        key = (agent, uid, gid, mode)
        async with self._lock:
            if key in self._servers:
                return self._servers[key][1]
            name = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
            path = os.path.join(directory, f"ssh-{name}.sock")

            async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    up_r, up_w = await asyncio.open_unix_connection(agent)
                except OSError:
                    writer.close()
                    return

                async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    try:
                        while data := await r.read(65536):
                            w.write(data)
                            await w.drain()
                    except OSError:
                        pass
                    finally:
                        with contextlib.suppress(Exception):
                            w.close()

                await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

            server = await asyncio.start_unix_server(relay, path=path)
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)
            self._servers[key] = (server, path)
            return path

    async def close(self) -> None:
        for server, path in self._servers.values():
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._servers.clear()
