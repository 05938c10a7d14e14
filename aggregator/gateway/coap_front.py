"""CoAP ingress/egress with aiocoap: POST /cat/<job>/up, GET (Observe) config and model, GET delta.

aiocoap reassembles Block1 uploads and serves Block2 downloads itself, so a board on an
802.15.4 link can send a frame larger than one block and fetch a snapshot of any size.
Rejections answer 4.00 Bad Request with the reason text, so an edge can log why; 2.04
leaves only once the frame's journal batch is fsynced (aggregator.gateway.journal).
"""

from __future__ import annotations

import asyncio

import aiocoap
import aiocoap.resource as resource

from aggregator.errors import UserError
from aggregator.gateway.pipeline import Aggregator, Outcome

REASON_CODES = {
    "bad_mac": aiocoap.UNAUTHORIZED, "unknown_kid": aiocoap.UNAUTHORIZED,
    "quarantined": aiocoap.FORBIDDEN, "oversize": aiocoap.REQUEST_ENTITY_TOO_LARGE,
}


class CoapBindError(UserError, OSError):
    """The CoAP endpoint cannot be bound (address in use, not local, no permission)."""


async def durable(agg: Aggregator, out: Outcome) -> None:
    """Wait until what `out` acknowledges is on disk (group commit)."""
    if out.seq is None:
        return
    fut = asyncio.get_running_loop().create_future()
    agg.when_durable(out, lambda: fut.done() or fut.set_result(None))
    await fut


class UpResource(resource.Resource):
    def __init__(self, agg: Aggregator) -> None:
        super().__init__()
        self.agg = agg

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        out = self.agg.submit(bytes(request.payload), "coap")
        if out.ok:
            await durable(self.agg, out)         # 2.04 only once the frame's batch is on disk
            return aiocoap.Message(code=aiocoap.CHANGED, payload=out.status.encode())
        code = REASON_CODES.get(out.reason or "", aiocoap.BAD_REQUEST)
        return aiocoap.Message(code=code, payload=(out.reason or "rejected").encode())


class _Published(resource.ObservableResource):
    """A GET-able, observable message the aggregator republishes on every round close."""

    def __init__(self, produce) -> None:
        super().__init__()
        self.produce = produce

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.produce(), content_format=60)


class DeltaResource(resource.Resource):
    def __init__(self, agg: Aggregator) -> None:
        super().__init__()
        self.agg = agg

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        base = None
        for q in request.opt.uri_query:
            if q.startswith("r="):
                try:
                    base = int(q[2:])
                except ValueError:
                    pass
        if base is None:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"need ?r=<base version>")
        msg = self.agg.delta_message(base)
        if msg is None:
            return aiocoap.Message(code=aiocoap.NOT_FOUND, payload=b"delta not kept: load /model")
        return aiocoap.Message(code=aiocoap.CONTENT, payload=msg, content_format=60)


class CoapFront:
    """The aiocoap server context for one job, bound to host:port."""

    def __init__(self, agg: Aggregator, host: str, port: int) -> None:
        self.agg = agg
        self.host = host
        self.port = port
        self.context: aiocoap.Context | None = None
        job = str(agg.job.job_id)
        self.site = resource.Site()
        self.config = _Published(agg.config_message)
        self.model = _Published(agg.snapshot_message)
        self.site.add_resource(("cat", job, "up"), UpResource(agg))
        self.site.add_resource(("cat", job, "config"), self.config)
        self.site.add_resource(("cat", job, "model"), self.model)
        self.site.add_resource(("cat", job, "delta"), DeltaResource(agg))
        agg.listeners.append(self._on_close)

    async def start(self) -> None:
        try:
            self.context = await aiocoap.Context.create_server_context(self.site, bind=(self.host, self.port))
        except OSError as exc:
            raise CoapBindError(f"CoAP: cannot serve on {self.host}:{self.port}: {exc.strerror or exc}") from exc

    def _on_close(self, closed) -> None:
        self.model.updated_state()
        self.config.updated_state()

    async def stop(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
