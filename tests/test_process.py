"""`drbridge run` and `drbridge check` as a site runs them: separate processes, real signals."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SiteHarness, sent_limit_w, wait_until

from bridge.sim.station import SimulatedStation

DRBRIDGE = [sys.executable, "-m", "bridge.cli"]


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DRBRIDGE, "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


async def spawn_bridge(config: Path) -> asyncio.subprocess.Process:
    log = (config.parent / "bridge.log").open("a")  # pytest shows it when a test fails
    return await asyncio.create_subprocess_exec(
        *DRBRIDGE, "run", "--config", str(config), stdout=log, stderr=log,
    )


def event_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select event_id, opt from events").fetchall()


@pytest.mark.xdist_group("heavy")  # see the Makefile
async def test_restart_after_kill_resumes_the_event_without_the_vtn(site: SiteHarness):
    """kill -9 mid-event, VTN gone: the restarted bridge rebuilds the limits from its store."""
    try:
        await restart_scenario(site)
    except AssertionError:
        print((site.tmp_path / "bridge.log").read_text())  # the bridge's own account
        raise


async def kill_mid_event(site: SiteHarness, answer_late: bool = False,
                         ) -> tuple[list[SimulatedStation], datetime, datetime]:
    """Two stations under a `drbridge run` process at 44 kW, an 11 kW event in force, then
    SIGKILL and the VTN gone. With ``answer_late``, CP0 takes the event's limit but holds
    back its answers, so the bridge dies before it hears of it. The stations, the event's
    start and a moment during it."""
    site.write_config(capacity_kw=44)
    db = site.tmp_path / "var" / "bridge.db"
    process = await spawn_bridge(site.config_path)
    try:
        stations = [site.add_station(f"CP{i}", rate_unit="Current") for i in range(2)]
        # (a station without a profile draws its full rating, so that alone says nothing)
        await wait_until(lambda: all(s.installed_profiles and s.composite_limit_w() >= 4_140
                                     for s in stations),
                         timeout=30, what="stations under the bridge's profiles")
        await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
        ven_id = site.vtn.ven_id("test-site")
        if answer_late:
            stations[0].hold_profile_answers(10)
        start = datetime.now(UTC) + timedelta(seconds=2)
        event_id = site.vtn.add_simple_event(ven_id, start, [(timedelta(minutes=10), 2)])
        during = start + timedelta(seconds=5)
        await wait_until(lambda: event_rows(db) == [(event_id, "optIn")], what="stored event")
        await wait_until(lambda: sum(s.composite_limit_w(during) for s in stations) <= 11_000,
                         what="the event's limits")
    finally:
        process.kill()  # SIGKILL: no chance to save anything more
        await process.wait()
    await site.vtn.stop()
    return stations, start, during


async def restart_scenario(site: SiteHarness) -> None:
    _, start, during = await kill_mid_event(site)

    # A station that lost its profiles while the bridge was down (a power cut, say)
    wiped: SimulatedStation = site.stations[0]
    wiped.installed_profiles.clear()
    await wiped.drop_connection()
    process = await spawn_bridge(site.config_path)
    try:
        await wait_until(lambda: wiped.installed_profiles != {}, timeout=20,
                         what="the restarted bridge re-applying limits")
        # the schedule it gets back holds the event and the restore after it
        await wait_until(lambda: wiped.composite_limit_w(start + timedelta(minutes=11)) > 0,
                         timeout=20, what="the event's schedule again")
        # a moment of the event after the restart: `during` is past when the first run was
        # slow, and a profile sent after the restart says nothing about a moment before it
        later = max(during, datetime.now(UTC) + timedelta(seconds=1))
        assert sum(s.composite_limit_w(later) for s in site.stations) <= 11_000
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    await site.vtn.start()  # the fixture stops it


def test_check_accepts_a_valid_config(tmp_path: Path):
    config = tmp_path / "site.yaml"
    config.write_text(
        "ven: {vtn_url: 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', ven_name: site-a}\n"
        "site: {capacity_kw: 66}\n"
    )
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert "policy     default" in result.stdout


def test_check_names_file_line_and_key(tmp_path: Path):
    config = tmp_path / "broken.yaml"
    config.write_text(
        "ven:\n"
        "  vtn_url: http://127.0.0.1:8080/OpenADR2/Simple/2.0b\n"
        "  ven_name: site-a\n"
        "site:\n"
        "  capacity_kw: -5\n"
        "  phasess: 3\n"
    )
    result = check(config)
    assert result.returncode == 2
    assert f"{config}:5: site.capacity_kw: Input should be greater than 0" in result.stderr
    assert f"{config}:6: site.phasess: unknown key" in result.stderr


def test_check_refuses_a_broken_policy_file(tmp_path: Path):
    policy = tmp_path / "mine.yaml"
    policy.write_text("name: mine\nsimple:\n  levels:\n    1: 150%\n")
    config = tmp_path / "site.yaml"
    config.write_text(
        "ven: {vtn_url: 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', ven_name: site-a}\n"
        "site: {capacity_kw: 66}\npolicy: mine.yaml\n"
    )
    result = check(config)
    assert result.returncode == 2
    assert f"{policy}:4: simple.levels[1]: Input should be less than or equal to 1" \
        in result.stderr


def test_check_refuses_unknown_policy_and_bad_yaml(tmp_path: Path):
    config = tmp_path / "site.yaml"
    config.write_text(
        "ven: {vtn_url: 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', ven_name: site-a}\n"
        "site: {capacity_kw: 66}\npolicy: nonesuch\n"
    )
    result = check(config)
    assert result.returncode == 2
    assert "policy: 'nonesuch' is neither a preset (default, price-responsive, emergency-only," \
        " fleet-depot) nor a policy file" in result.stderr
    config.write_text("ven: [\n")
    result = check(config)
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    missing = check(tmp_path / "absent.yaml")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_run_refuses_an_invalid_config_before_starting(tmp_path: Path):
    config = tmp_path / "site.yaml"
    config.write_text("ven: {vtn_url: 'ftp://nowhere', ven_name: a}\nsite: {capacity_kw: 1}\n")
    result = subprocess.run([*DRBRIDGE, "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "ven.vtn_url" in result.stderr and "http://" in result.stderr
    assert not (tmp_path / "var").exists()  # nothing started, nothing written


@pytest.mark.xdist_group("heavy")  # see the Makefile
async def test_restart_after_a_kill_before_the_event_limit_was_stored(site: SiteHarness):
    """Killed after a station took the event's lower limit but before its answer was stored:
    the restarted bridge must not give it back the limit from before the event."""
    stations, _, during = await kill_mid_event(site, answer_late=True)

    wiped = stations[0]  # and it lost its profiles while the bridge was down
    wiped.hold_profile_answers(0)  # answers again on its next connection
    wiped.installed_profiles.clear()
    await wiped.drop_connection()
    sent_before = [len(s.received) for s in stations]
    process = await spawn_bridge(site.config_path)
    try:
        await wait_until(lambda: wiped.installed_profiles != {}, timeout=20,
                         what="the restarted bridge re-applying limits")
        later = max(during, datetime.now(UTC) + timedelta(seconds=1))
        # every profile the restarted bridge sent: none lets a station draw more than the
        # event's site limit, nor do the limits in force add up to more
        for station, before in zip(stations, sent_before, strict=True):
            for action, payload in station.received[before:]:
                if action == "SetChargingProfile":
                    limit = sent_limit_w(station, payload, later)
                    assert limit is None or limit <= 11_000, (station.id, payload)
        assert sum(s.composite_limit_w(later) for s in stations) <= 11_000
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    await site.vtn.start()  # the fixture stops it
