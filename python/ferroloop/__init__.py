"""ferroloop: a drop-in asyncio event loop with a Rust engine.

import ferroloop
ferroloop.run(main())                                        # like asyncio.run
asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+
"""

from ._core import Handle, TimerHandle
from ._loop import Loop
from ._runner import EventLoopPolicy, install, new_event_loop, run

__all__ = [
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "TimerHandle",
    "install",
    "new_event_loop",
    "run",
]
