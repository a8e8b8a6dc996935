"""Shadow servers for the benchmark: ``slow`` answers after a delay, ``stall`` never answers.

Run as its own process (pinned away from the app): ``python -m bench.shadows slow 2.0 PORT``.
"""

from __future__ import annotations

import asyncio
import sys

ANSWER = b'{"customer_id": "C00000", "churn_probability": 0.3, "make_offer": false, "model_version": "v2"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if mode == "stall":
                await asyncio.sleep(3600)
            await asyncio.sleep(delay)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(mode: str, delay: float, port: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, mode, delay), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
