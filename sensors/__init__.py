"""Sensors: the packet sensor and the log sensors turn traffic and logs into normalized events
(pipeline.schema) and publish them to the bus. Not built yet: see issues 3 (packet) and 4 (logs)."""
