"""Two ways to block an event loop, caught while they block (ferroloop's stall reports).

python examples/stalls.py          # or leave the code alone: FERROLOOP_STALL_MS=100
"""

import asyncio
import logging
import time

import ferroloop


def checksum(data):
    total = 0
    for byte in data:  # a tight pure-Python loop: holds the loop ~0.3 s
        total = (total * 31 + byte) % 1_000_003
    return total


async def load_config():
    time.sleep(0.3)  # a blocking call in a coroutine
    return {}


async def handle_request():
    return await load_config()


async def main():
    asyncio.get_running_loop().set_stall_handler(0.1)  # log_stall: WARNING on 'ferroloop'
    await asyncio.create_task(handle_request(), name="request-1")
    await asyncio.sleep(0.05)
    checksum(bytes(range(256)) * 4000)
    await asyncio.sleep(0.05)


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    ferroloop.run(main())
