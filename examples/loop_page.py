"""A "what is my loop doing" page: serve loop.stats() and the last stall report.

python examples/loop_page.py   # then: curl http://127.0.0.1:8099/
"""

import asyncio
import dataclasses
import json
import time

import ferroloop

last_stall = {}  # written by the stall handler, on the watchdog thread


async def page(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = {"stats": dataclasses.asdict(asyncio.get_running_loop().stats()), "stall": last_stall}
    body = json.dumps(body, indent=2, default=dict).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    writer.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def main(port=8099, seconds=None):
    loop = asyncio.get_running_loop()
    loop.set_stall_handler(0.1, lambda r: last_stall.update(dataclasses.asdict(r)))
    loop.call_later(0.5, time.sleep, 0.3)  # something to see on the page
    server = await asyncio.start_server(page, "127.0.0.1", port)
    async with server:
        await (asyncio.sleep(seconds) if seconds else server.serve_forever())


if __name__ == "__main__":
    ferroloop.run(main())
