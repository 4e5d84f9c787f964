"""HTTP API, live alert stream and the duty console."""
