"""An Apache Kafka broker for tests and demos: KRaft mode (combined broker + controller), one node.

The broker jars come from Maven Central through `mvn` and deploy/local/pom.xml, cached in
deploy/local/.cache/kafka-<version>/ (or $GANZHI_KAFKA_LIBS). The storage directory is formatted on
first start and kept across restarts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path

from deploy.local.process import ServerProcess, free_port, port_open, wait_until

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
KAFKA_VERSION = "4.1.1"

_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=8388608
auto.create.topics.enable=true
"""

_LOG4J = """Configuration:
  Appenders:
    File:
      name: file
      fileName: "{log_file}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: org.apache.kafka.coordinator.group  # joins, assignments, fenced members: what a stuck group did
        level: INFO
"""


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url of 16 bytes) that does not start with '-': the storage tool would read
    it as an option (a CI run failed so, 1 start in 64), which is why Kafka's own Uuid.randomUuid() skips them."""
    while True:
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def libs_dir() -> Path:
    return Path(os.environ.get("GANZHI_KAFKA_LIBS", HERE / ".cache" / f"kafka-{KAFKA_VERSION}"))


def resolve_jars() -> Path:
    """Download the broker jars with Maven (once); return the directory holding them."""
    target = libs_dir()
    if any(target.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka broker jars: apt-get install -y maven")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={target}",
         "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}"],
        check=True,
    )
    return target


class LocalKafka(ServerProcess):
    version = KAFKA_VERSION

    def __init__(self, workdir: Path, port: int | None = None, controller_port: int | None = None):
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("a Java runtime (17+) is needed for the Kafka broker: apt-get install -y default-jre")
        return [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
                "-cp", f"{resolve_jars()}/*", *args]

    def start(self, timeout_s: float = 90) -> LocalKafka:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_dir = self.workdir / "data"
        props = self.workdir / "server.properties"
        props.write_text(_PROPERTIES.format(port=self.port, controller_port=self.controller_port, log_dir=log_dir))
        (self.workdir / "log4j2.yaml").write_text(_LOG4J.format(log_file=self.workdir / "kafka.log"))
        if not (log_dir / "meta.properties").exists():
            cluster_id = new_cluster_id()
            subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                           check=True, stdout=subprocess.DEVNULL)
        self._spawn(self._java("kafka.Kafka", str(props)), self.workdir / "stdout.log")
        wait_until(self._ready, timeout_s, f"Kafka broker on port {self.port}", self.alive,
                   logs=(self.workdir / "stdout.log", self.workdir / "kafka.log"))
        return self

    def _ready(self) -> bool:
        from kafka import KafkaAdminClient

        if not port_open(self.port):
            return False
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            brokers = admin.describe_cluster().get("brokers", [])
            return bool(brokers) and not any(b.get("is_fenced") for b in brokers)
        finally:
            admin.close()
