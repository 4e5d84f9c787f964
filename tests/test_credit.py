"""Risk tiers from a subject's record: clues and open cases raise the assessed tier, the
detectors judge by the higher of it and the declared tier, and a record that clears
(rectified, or out of the window) brings it back down (信用修复)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from offsite.casework.credit import tier_for
from offsite.detectors.findings import Finding
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import RunningGateway, start_gateway


def test_points_to_tiers() -> None:
    assert [tier_for(p) for p in (0, 1.9, 2, 5.9, 6, 11.9, 12, 40)] == list("AABBCCDD")


async def _red(gw: RunningGateway, rule: str, when: datetime) -> str:
    finding = Finding(
        rule=rule,
        device_id="gas-0001",
        severity="red",
        phase="opened",
        episode_start=when - timedelta(seconds=20),
        at=when,
        title="test",
        value=60.0,
        peak=60.0,
        threshold=50.0,
    )
    return await gw.runtime.casework.handle(finding, gw.runtime.directory["gas-0001"])


async def _subject(gw: RunningGateway, subject_id: str) -> dict[str, Any]:
    subjects = (await gw.http.get("/api/v1/subjects")).json()
    found: dict[str, Any] = next(s for s in subjects if s["id"] == subject_id)
    return found


async def test_a_bad_record_raises_the_tier_and_a_cleared_one_brings_it_back(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        subject = gw.runtime.directory["gas-0001"].subject_id
        declared = (await _subject(gw, subject))["risk_tier"]
        assert declared == "B"
        now = datetime.now(UTC)
        for n in range(3):  # three red clues; the first files a case, the others join it
            await _red(gw, f"test.red.{n}", now - timedelta(minutes=n))
        changed = await gw.runtime.assess_credit(now)
        assert [(a.subject_id, a.tier) for a in changed] == [(subject, "D")]  # 3x4 + 4 points
        shown = await _subject(gw, subject)
        assert (shown["assessed_tier"], shown["effective_tier"]) == ("D", "D")
        assert shown["assessment"]["points"] == 16.0

        # the gateway reloads its directory on the change: detection is now as strict as D
        await gw.runtime.refresh_directory()
        assert gw.runtime.directory["gas-0001"].risk_tier == "D"

        # a year and a day later none of it counts but the open case: back to B, declared
        later = now + timedelta(days=366)
        changed = await gw.runtime.assess_credit(later)
        assert [(a.subject_id, a.tier) for a in changed] == [(subject, "B")]  # 4 points
        await gw.runtime.refresh_directory()
        assert gw.runtime.directory["gas-0001"].risk_tier == "B"
