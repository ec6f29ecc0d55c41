"""The Jupyter kernel client our notebook runs use (papermill, the reference runs): one that cannot stall.

Why: jupyter_client's async channel waits for a message with one `socket.poll(timeout)` on pyzmq's asyncio
integration, which is edge-triggered. On a loaded machine the wake-up for a message that has already arrived can be
missed; the poll then sleeps for the whole cell timeout and *returns the message* at its end, so nbclient goes on as
if the cell had just finished. Seen in lab 01's widget cell: 8 of 40 `interactive` cells took exactly the 20 s
timeout under two busy processes, and the run still passed. Polling in short slices re-checks the socket's state
on each call (pyzmq reads `zmq.EVENTS` first), so a missed wake-up costs at most one slice.
"""

from __future__ import annotations

import time
from queue import Empty

from jupyter_client import AsyncKernelManager
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

POLL_SLICE_S = 0.5


class SlicedPollChannel(AsyncZMQSocketChannel):
    """A channel whose `get_msg(timeout)` polls in slices of POLL_SLICE_S until the timeout."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else max(0.0, min(POLL_SLICE_S, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class ReliableKernelClient(AsyncKernelClient):
    shell_channel_class = Type(SlicedPollChannel)
    iopub_channel_class = Type(SlicedPollChannel)
    control_channel_class = Type(SlicedPollChannel)


class ReliableKernelManager(AsyncKernelManager):
    """A kernel manager whose clients are ReliableKernelClient. nbclient sets `client_class` to the stock async
    client after creating the manager, so the factory is chosen here, when the client is made."""

    def client(self, **kwargs) -> AsyncKernelClient:
        self.client_factory = ReliableKernelClient
        return super().client(**kwargs)
