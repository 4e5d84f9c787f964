"""Storage: schema migrations, batched telemetry writes, quarantine of refused input."""
