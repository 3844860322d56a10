"""Log sensors: parsers that turn log records into normalized events (syslog and tailing: issue 4)."""
