"""Local servers for tests and demos, started by the project itself: a ClickHouse server (chDB serving
the native TCP and HTTP protocols from a subprocess) and an Apache Kafka broker in KRaft mode (jars from
Maven Central). `python -m deploy.local up|down|status` runs them by hand."""
