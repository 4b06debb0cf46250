"""What the bridge's process loads: each module it does not need is resident memory for
as long as the bridge runs."""

from __future__ import annotations

import subprocess
import sys


def _run(probe: str) -> str:
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    return result.stdout.strip()


def test_the_bridge_loads_no_numpy_pandas_nor_the_ocpp_packages_message_classes():
    # sqlite-utils would import numpy and pandas (about 12 MB), the ocpp package's Action
    # enums every message class and jsonschema (about 11 MB): the bridge uses none of them
    probe = ("import sys, bridge.cli, bridge.app, bridge.store, bridge.upstream.controller; "
             "print([m for m in ('numpy', 'pandas', 'jsonschema', 'ocpp.v16', 'ocpp.v201', "
             "'ocpp.v21') if m in sys.modules])")
    assert _run(probe) == "[]"


def test_each_versions_actions_are_those_the_ocpp_package_lists():
    from ocpp.v16.enums import Action as Action16
    from ocpp.v21.enums import Action as Action21
    from ocpp.v201.enums import Action as Action201

    from bridge.ocpp.v16 import OCPP16
    from bridge.ocpp.v21 import OCPP21
    from bridge.ocpp.v201 import OCPP201

    for dialect, enum in ((OCPP16, Action16), (OCPP201, Action201), (OCPP21, Action21)):
        assert dialect.actions == {action.value for action in enum}
    assert {"MeterValues", "BootNotification", "SetChargingProfile"} <= OCPP16.actions
    assert "MeterValuesResponse" not in OCPP16.actions and "MeterValues" in OCPP201.actions


def test_numpy_may_still_be_imported_once_sqlite_utils_is():
    probe = ("import bridge.sqlite_db, numpy, sqlite_utils.db; "
             "print(numpy.float64(1.5) + 1, sqlite_utils.db.np is None)")
    assert _run(probe) == "2.5 True"


def test_a_bridge_for_openadr_2_0b_does_not_load_the_openadr_3_ven_to_read_its_config():
    probe = "import sys, bridge.config; print('ven.oadr3.ven' in sys.modules)"
    assert _run(probe) == "False"
