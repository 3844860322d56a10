"""`ganzhi sensor ...`: run a sensor, publishing to the bus or writing JSON lines to stdout.

With Kafka configured, events go to <prefix>.events and `ganzhi writer` stores them. Without it (the
embedded default) the sensor also runs the writer and live detection in-process into the embedded store.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.config import UsageProblem
from sensors.logs.parsers import FORMATS, ParseContext, canonical_format
from sensors.logs.router import RecordRouter
from sensors.sink import BusSink, JsonlSink
from sensors.spool import DiskSpool, SpoolBusy

sensor_app = typer.Typer(help="Sensors: capture packets, tail log files, receive syslog.", no_args_is_help=True)


class Output(StrEnum):
    bus = "bus"
    jsonl = "jsonl"


OutputOption = Annotated[Output, typer.Option(help="bus: publish (and store, in embedded mode); jsonl: events to "
                                                   "stdout, dead letters to stderr")]
SensorName = Annotated[str, typer.Option("--sensor", help="sensor instance name written into every event")]
TimezoneOption = Annotated[str, typer.Option(help="time zone of timestamps written without one (IANA name)")]
YearOption = Annotated[int | None, typer.Option(help="year of year-less timestamps (RFC 3164); default: current")]


def _context(sensor: str, timezone: str, year: int | None, host: str = "") -> ParseContext:
    try:
        return ParseContext.make(sensor=sensor, timezone=timezone, year=year, host=host)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


@contextlib.contextmanager
def _router(ctx: typer.Context, output: Output, rules: list[str] | None = None,
            sensor: str = "sensor") -> Iterator[RecordRouter]:
    """A router into the chosen output; in embedded mode a writer thread stores what the sensor publishes.
    With Kafka, a broker outage spools to $GANZHI_HOME/spool/<sensor> (bounded by GANZHI_SPOOL_MB)."""
    from pipeline.bus import open_bus
    from pipeline.cli import _live_detection, _settings, err
    from pipeline.enrich import open_enricher
    from pipeline.store import open_store
    from pipeline.writer import Writer

    if output is Output.jsonl:
        router = RecordRouter(JsonlSink())
        yield router
        router.sink.flush()
        return
    settings = _settings(ctx)
    bus = open_bus(settings)
    spool = None
    if settings.kafka:
        try:
            spool = DiskSpool(settings.home / "spool" / sensor, max_bytes=settings.spool_mb * 1024 * 1024)
        except SpoolBusy as exc:
            raise UsageProblem(f"{exc}: give each sensor process its own --sensor name") from None
    router = RecordRouter(BusSink(bus, spool=spool))
    stop = threading.Event()
    thread = None
    if not settings.kafka:
        store = open_store(settings)
        live = _live_detection(store, bus, rules)
        writer = Writer(bus, store, on_batch=live, enricher=open_enricher(settings))
        thread = threading.Thread(target=writer.run, args=(stop,), name="embedded-writer", daemon=True)
        thread.start()
    try:
        yield router
    finally:
        router.sink.flush()
        if spool is not None:
            if not spool.empty():
                err.print(f"[yellow]{spool.bytes:,} bytes stay spooled in {spool.directory}: the broker was "
                          "unreachable; they are sent first when this sensor runs again[/]")
            if spool.dropped:
                err.print(f"[red]{spool.dropped:,} message(s) dropped: the spool was full (GANZHI_SPOOL_MB)[/]")
            spool.close()
        if thread is not None:
            stop.set()
            thread.join()
            err.print(f"stored in {settings.home / 'chdb'}: {writer.stats.events_written:,} events, "
                      f"{writer.stats.dead_letters:,} dead letters; detection: {live.stats.alerts_published} "
                      "alert(s) (`ganzhi alerts`)")
            store.close()
        bus.close()


def _stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def _summary(name: str, stats: Any, started: float, **more: Any) -> None:
    from pipeline.cli import err

    parts = [f"{stats.records:,} records", f"{stats.events:,} events", f"{stats.dead_letters:,} dead-lettered"]
    if stats.drops:
        parts.append("drops " + ", ".join(f"{k}={v:,}" for k, v in stats.drops.items()))
    parts += [f"{k}={v:,}" for k, v in more.items()]
    err.print(f"{name}: " + ", ".join(parts) + f" in {time.monotonic() - started:.1f}s")


@sensor_app.command("tail")
def tail(
    ctx: typer.Context,
    patterns: Annotated[list[str], typer.Argument(help="files or glob patterns, e.g. '/var/log/zeek/*.log'")],
    fmt: Annotated[str, typer.Option("--format", help=f"auto or one of: {', '.join(FORMATS)}")] = "auto",
    once: Annotated[bool, typer.Option("--once", help="read to the end and exit (batch import)")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file (default: $GANZHI_HOME/tail-<name>.json; "
                                                         "none with --once and --output jsonl)")] = None,
    output: OutputOption = Output.bus,
    sensor: SensorName = "ganzhi-logs",
    timezone: TimezoneOption = "UTC",
    year: YearOption = None,
    host: Annotated[str, typer.Option(help="the host these files come from: set as host_name where a record names "
                                           "none (web access logs), so the inventory's hostname places it")] = "",
    rules: Annotated[list[str] | None, typer.Option("--rules", help="embedded mode: rules for live detection")] =
    None,
) -> None:
    """Follow log files (rotation-safe, checkpointed) and turn each record into a normalized event."""
    from pipeline.cli import _progress, _settings
    from sensors.logs.tail import Tailer

    if fmt != "auto":
        try:
            fmt = canonical_format(fmt)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
    if fmt == "evtx":
        return _evtx(ctx, patterns, output, sensor, rules)
    parse_ctx = _context(sensor, timezone, year, host)
    if checkpoint is None and not (once and output is Output.jsonl):
        checkpoint = _settings(ctx).home / f"tail-{sensor}.json"
    started = time.monotonic()
    with _router(ctx, output, rules, sensor) as router:
        try:
            tailer = Tailer(patterns, fmt, router, checkpoint, parse_ctx)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
        if once:
            with _progress() as progress:
                task = progress.add_task("reading", total=None)
                tailer.on_progress = lambda n: progress.advance(task, n)
                tailer.run_once()
        else:
            tailer.follow(_stop_event())
    _summary("tail", router.stats, started, files=tailer.stats.files, rotations=tailer.stats.rotations,
             truncations=tailer.stats.truncations)


def _evtx(ctx: typer.Context, patterns: list[str], output: Output, sensor: str, rules: list[str] | None) -> None:
    """Windows .evtx files: whole-file reads (an .evtx is not a line format)."""
    import glob

    import orjson

    from sensors.logs.parsers.windows import read_evtx, to_event

    started = time.monotonic()
    with _router(ctx, output, rules, sensor) as router:
        for pattern in patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    for record_id, doc in read_evtx(Path(path)):
                        origin = f"{path}#{record_id}"
                        raw = orjson.dumps(doc).decode()
                        router.handle("evtx", lambda d=doc, o=origin, r=raw: to_event(d, sensor, o, raw=r), raw,
                                      origin)
                except (OSError, RuntimeError) as exc:
                    router.reject("evtx", f"unreadable .evtx file: {exc}", "", path)
    _summary("evtx", router.stats, started)


@sensor_app.command("syslog")
def syslog(
    ctx: typer.Context,
    udp: Annotated[int | None, typer.Option(help="UDP port (514)")] = None,
    tcp: Annotated[int | None, typer.Option(help="TCP port, newline or octet-counted framing (514/601)")] = None,
    tls: Annotated[int | None, typer.Option(help="TLS port (6514); needs --tls-cert and --tls-key")] = None,
    tls_cert: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    tls_key: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    bind: Annotated[str, typer.Option(help="address to listen on")] = "0.0.0.0",
    queue: Annotated[int, typer.Option(help="messages held at most (bounded memory)")] = 10_000,
    output: OutputOption = Output.bus,
    sensor: SensorName = "ganzhi-syslog",
    timezone: TimezoneOption = "UTC",
    rules: Annotated[list[str] | None, typer.Option("--rules", help="embedded mode: rules for live detection")] =
    None,
) -> None:
    """Receive syslog (RFC 3164/5424) over UDP, TCP and TLS until SIGTERM/Ctrl-C."""
    from pipeline.cli import err
    from sensors.logs.syslog_server import Listen, SyslogServer

    listen = Listen(udp=udp, tcp=tcp, tls=tls, host=bind, tls_cert=str(tls_cert) if tls_cert else None,
                    tls_key=str(tls_key) if tls_key else None)
    started = time.monotonic()
    with _router(ctx, output, rules, sensor) as router:
        try:
            server = SyslogServer(listen, router, _context(sensor, timezone, None), queue_size=queue).start()
        except (ValueError, OSError) as exc:
            raise UsageProblem(f"cannot start the syslog receiver: {exc}") from None
        err.print("syslog: listening on " + ", ".join(f"{k} {bind}:{v}" for k, v in server.ports.items()))
        stop = _stop_event()
        while not stop.wait(10):
            err.print(f"syslog: {router.stats.as_dict()}", highlight=False)
        server.stop()
    _summary("syslog", router.stats, started)


@sensor_app.command("packet")
def packet(
    ctx: typer.Context,
    pcap: Annotated[list[Path] | None, typer.Option("--pcap", help="pcap/pcapng file(s) to replay")] = None,
    iface: Annotated[str | None, typer.Option("--iface", help="interface to capture on (needs CAP_NET_RAW)")] = None,
    bpf: Annotated[str | None, typer.Option("--bpf", help="BPF capture filter, e.g. 'not port 22'")] = None,
    snaplen: Annotated[int, typer.Option(min=64, max=262144, help="bytes kept per packet")] = 65535,
    promisc: Annotated[bool, typer.Option("--promisc/--no-promisc", help="promiscuous mode")] = True,
    health_interval: Annotated[float, typer.Option(help="seconds between sensor_health events")] = 60.0,
    output: OutputOption = Output.bus,
    sensor: SensorName = "ganzhi-packet",
    rules: Annotated[list[str] | None, typer.Option("--rules", help="embedded mode: rules for live detection")] =
    None,
) -> None:
    """Decode packets from pcap files or an interface into flow and DNS/HTTP/TLS/SSH events."""
    from pipeline.cli import _progress, err
    from sensors.packet.capture import CaptureError, LiveCapture, LiveOptions, read_file
    from sensors.packet.sensor import PacketSensor

    if bool(pcap) == bool(iface):
        raise UsageProblem("give either --pcap FILE (replay) or --iface NAME (live capture)")
    started = time.monotonic()
    with _router(ctx, output, rules, sensor) as router:
        sink = router.sink
        try:
            if pcap:
                total = sum(p.stat().st_size for p in pcap if p.is_file())
                with _progress() as progress:
                    task = progress.add_task("packets", total=total or None)
                    for path in pcap:
                        packet_sensor = PacketSensor(sink, sensor, str(path), health_interval_s=health_interval)
                        packet_sensor.run(read_file(path), on_batch=lambda b: progress.advance(
                            task, len(b.data) + 16 * len(b)))
                        _packet_summary(err, str(path), packet_sensor, started)
            else:
                capture = LiveCapture(LiveOptions(iface, bpf, snaplen, promisc))
                packet_sensor = PacketSensor(sink, sensor, iface, health_interval_s=health_interval,
                                             drops=capture.kernel_drops)
                err.print(f"packet: capturing on {iface}" + (f" ({bpf})" if bpf else ""))
                try:
                    packet_sensor.run(capture.batches(_stop_event()))
                finally:
                    capture.close()
                _packet_summary(err, iface, packet_sensor, started)
        except CaptureError as exc:
            raise UsageProblem(str(exc)) from None


def _packet_summary(err: Any, origin: str, packet_sensor: Any, started: float) -> None:
    c = packet_sensor.counters()
    errors = ", ".join(f"{k}={v:,}" for k, v in c["decode_errors"].items()) or "none"
    events = ", ".join(f"{k}={v:,}" for k, v in c["events"].items()) or "none"
    err.print(f"packet {origin}: {c['packets']:,} packets, {c['bytes']:,} bytes, drops={c['drops']:,}; "
              f"events: {events}; decode errors: {errors}; in {time.monotonic() - started:.1f}s", highlight=False)
