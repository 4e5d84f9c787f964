"""Counters of everything the gateway took in and what became of it (`/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from offsite.latency import LatencyHistogram

# `*_created` series double the output and say nothing a scraper needs here.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """One registry per runtime, so that tests running several do not mix their counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "offsite_mqtt_messages",
            "MQTT messages taken from the broker",
            ["channel"],
            registry=self.registry,
        )
        self.readings_stored = Counter(
            "offsite_readings_stored",
            "readings committed to telemetry",
            ["domain"],
            registry=self.registry,
        )
        self.readings_duplicate = Counter(
            "offsite_readings_duplicate",
            "readings already stored (redelivery, resend)",
            ["domain"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "offsite_quarantined",
            "messages or readings refused into quarantine",
            registry=self.registry,
        )
        self.refused = Counter(
            "offsite_refused_messages",
            "messages refused by device: rate_limited (throttled before decoding; one sample"
            " per episode quarantined), identity_mismatch (quarantined), or unstorable and"
            " unstorable_status (refused by the database even as quarantine records)",
            ["reason", "device_id"],
            registry=self.registry,
        )
        self.acked = Counter(
            "offsite_mqtt_acked",
            "QoS 1 messages acknowledged after commit",
            registry=self.registry,
        )
        self.batches = Counter(
            "offsite_ingest_batches",
            "batches written, each one transaction (ingest_write_linger_s merges small ones)",
            registry=self.registry,
        )
        self.write_errors = Counter(
            "offsite_write_errors",
            "batch writes that failed and were retried",
            ["kind"],
            registry=self.registry,
        )
        self.findings = Counter(
            "offsite_findings", "detector findings", ["rule", "phase"], registry=self.registry
        )
        self.alerts_sent = Gauge(
            "offsite_alerts_sent_total",
            "alerts pushed to live clients since start",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "offsite_ingest_backlog",
            "messages waiting between MQTT and the writer",
            registry=self.registry,
        )
        self.commit_latency = LatencyHistogram(
            "offsite_ingest_commit_latency_seconds",
            "from a message's first reading (device time) to the commit that stored it",
        )
        self.registry.register(self.commit_latency)
        self.finding_latency = LatencyHistogram(
            "offsite_finding_latency_seconds",
            "from the reading that fired a finding (device time) to the finding being raised",
        )
        self.registry.register(self.finding_latency)
        self.casework_latency = LatencyHistogram(
            "offsite_casework_latency_seconds",
            "from a finding being raised to its clue, evidence and alert being committed",
        )
        self.registry.register(self.casework_latency)
        self.announce_latency = LatencyHistogram(
            "offsite_announce_latency_seconds",
            "from a finding being raised to its new clue's alert being committed",
        )
        self.registry.register(self.announce_latency)
        self.loop_lag = LatencyHistogram(
            "offsite_event_loop_lag_seconds",
            "how late a 10 ms timer fires on the gateway's event loop: the longest stall any"
            " alert waited behind",
        )
        self.registry.register(self.loop_lag)
        self.mqtt_connected = Gauge(
            "offsite_mqtt_connected", "1 while connected to the broker", registry=self.registry
        )
