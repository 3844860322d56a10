"""The packet sensor: batches → decode → flow accounting → application metadata → events on a sink.

    capture (pcap file / interface) ─▶ Decoder ─▶ FlowTable ─▶ FlowApp per flow (DNS, HTTP, TLS, SSH)
                                                     │                 │
                                                     └─ conn events ───┴─ dns/http/tls/ssh events ─▶ sink

Flow expiry runs once per second of capture time; at the end of a file every flow still open is flushed.
Counters (packets, bytes, decode errors by reason, drops, flows active) go out as `sensor_health` events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from sensors.health import health_event
from sensors.packet.apps import FlowApp
from sensors.packet.capture import Batch
from sensors.packet.decode import Decoder, Packets
from sensors.packet.events import EventFactory, community_id
from sensors.packet.flows import SYN, FlowTable, Timeouts
from sensors.sink import Sink

log = logging.getLogger(__name__)
SWEEP_US = 1_000_000


class PacketSensor:
    def __init__(self, sink: Sink, sensor: str = "ganzhi-packet", origin: str = "",
                 timeouts: Timeouts | None = None, health_interval_s: float = 60.0,
                 metadata: bool = True, drops: Callable[[], int] | None = None):
        self.sink = sink
        self.sensor = sensor
        self.decoder = Decoder()
        self.flows = FlowTable(timeouts)
        self.apps: dict[int, FlowApp] = {}
        # per inspected flow, what its events share and never changes: endpoints, VLANs, start; Community ID
        self.identity: dict[int, tuple[dict[str, Any], str]] = {}
        self.factory = EventFactory(sensor, origin)
        self.metadata = metadata  # False: flows only (the benchmark's decode + accounting figure)
        self.events: Counter[str] = Counter()
        self.drops = 0
        self._kernel_drops = drops
        self.now_us = 0
        self._next_sweep = 0
        self.health_interval_s = health_interval_s
        self._next_health = time.monotonic() + health_interval_s

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, batches: Iterable[Batch], on_batch: Callable[[Batch], None] | None = None) -> None:
        for batch in batches:
            self.process(batch)
            if on_batch is not None:
                on_batch(batch)
        self.close()

    def process(self, batch: Batch) -> None:
        for packets in self.decoder.decode(batch):
            accounted = self.flows.account(packets)
            if self.metadata:
                self._inspect(packets, accounted.slot, accounted.from_orig)
            self.now_us = max(self.now_us, int(packets.ts_us.max()))
        if self.now_us >= self._next_sweep:
            self._expire(self.flows.expired(self.now_us))
            self._next_sweep = self.now_us + SWEEP_US
        if time.monotonic() >= self._next_health:
            self.publish_health()

    def close(self) -> None:
        """End of input: every open flow is reported, then the counters."""
        slots = self.flows.all_active()
        self._expire((slots, np.zeros(len(slots), dtype=bool)), reason="end_of_capture")
        self.publish_health()
        self.sink.flush()

    # -- application layer ----------------------------------------------------------------------------

    def _inspect(self, p: Packets, slot: np.ndarray, from_orig: np.ndarray) -> None:
        want = self.flows.inspect[slot] & ((p.pcap_len > 0) | ((p.flags & SYN) != 0))
        rows = np.flatnonzero(want)
        if not len(rows):
            return
        data = p.data
        apps = self.apps
        inspect = self.flows.inspect
        for s, fo, seq, flags, ts, start, length in zip(
                slot[rows].tolist(), from_orig[rows].tolist(), p.seq[rows].tolist(), p.flags[rows].tolist(),
                p.ts_us[rows].tolist(), p.poff[rows].tolist(), p.pcap_len[rows].tolist(), strict=True):
            if not inspect[s]:
                continue
            app = apps.get(s)
            if app is None:
                flow = self.flows.identity(s)
                app = apps[s] = FlowApp(flow["proto"], flow["orig"][2], flow["resp"][2])
                self.identity[s] = (flow, community_id(flow["orig"], flow["resp"], flow["proto"]))
            try:
                app.packet(fo, seq, flags, data[start:start + length], ts)
            except Exception:  # a parser bug must not stop the sensor: count it, stop looking at this flow
                log.exception("application parser failed")
                self.decoder.stats.errors["app_parser_bug"] += 1
                app.done = True
            if app.out:
                self._emit_app(s, app)
            if app.done:
                inspect[s] = False

    def _emit_app(self, slot: int, app: FlowApp) -> None:
        flow, cid = self.identity[slot]
        for seq, (kind, ts_us, fields) in enumerate(app.out):
            fields.setdefault("app_protocol", kind)
            self._emit(self.factory.make(kind, ts_us, flow, cid, fields, flow["first_number"], seq + 1), kind)
        app.out.clear()

    # -- flows ------------------------------------------------------------------------------------------

    def _expire(self, expired: tuple[np.ndarray, np.ndarray], reason: str = "") -> None:
        slots, cut = expired
        if not len(slots):
            return
        services, cids = [], []
        for slot in slots.tolist():
            app = self.apps.pop(slot, None)
            if app is None:
                services.append("")
                cids.append("")
                continue
            app.finish()
            if app.out:
                self._emit_app(slot, app)
            services.append(app.service)
            cids.append(self.identity.pop(slot)[1])
        reasons = [reason or ("active_timeout" if c else "inactive") for c in cut.tolist()]
        for event in self.factory.conns(self.flows.columns(slots), services, reasons, cids):
            self._emit(event, "conn")
        self.flows.release(slots)

    def _emit(self, event: dict[str, Any], kind: str) -> None:
        self.events[kind] += 1
        self.sink.emit(event)

    # -- health -------------------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        if self._kernel_drops is not None:
            self.drops += self._kernel_drops()
        return {**self.decoder.stats.as_dict(), "drops": self.drops, "flows_active": self.flows.active_count,
                "events": dict(self.events)}

    def publish_health(self) -> None:
        self._next_health = time.monotonic() + self.health_interval_s
        self.sink.emit(health_event(self.sensor, "packet", self.counters()))
