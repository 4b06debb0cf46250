"""``drbridge demo --protocol 3`` as a user runs it: its own process, a local OpenADR 3 VTN
with OAuth2, simulated chargers and the bridge through one event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DRBRIDGE = [sys.executable, "-m", "bridge.cli"]


@pytest.mark.xdist_group("heavy")  # see the Makefile
def test_the_demo_runs_against_a_local_openadr_3_vtn(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "DRBRIDGE_DEMO_OADR3_SECRET"}
    result = subprocess.run(
        [*DRBRIDGE, "demo", "--protocol", "3", "--stations", "4", "--workdir",
         str(tmp_path / "demo")], capture_output=True, text=True, timeout=150, env=env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "drbridge demo: OpenADR 3.1.0 VTN at http://127.0.0.1:" in out
    assert "VEN answered       optIn (OpenADR 3 has no opt message)" in out
    # one report of the site's mean load per 4-second interval of the event
    assert "telemetry reports  4 values reached the VTN" in out
    assert "cap held           yes" in out
    config = (tmp_path / "demo" / "demo-site.yaml").read_text()
    assert 'protocol: "3"' in config and "secret-a" not in config  # the secret stays out
