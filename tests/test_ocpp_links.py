"""The links of every OCPP version are ChargerLinks, and the rest of the bridge asks a link
nothing else: no probing for what a version can do."""

import ast
import inspect
from pathlib import Path

import pytest

from bridge.aio import Wake
from bridge.ocpp import der_control as der
from bridge.ocpp import voltage_monitors as vm
from bridge.ocpp.framing import OcppJLink
from bridge.ocpp.link import ChargerLink
from bridge.ocpp.server import SUBPROTOCOLS
from bridge.ocpp.v16 import StationLink16
from bridge.ocpp.v21 import StationLink21
from bridge.ocpp.v201 import StationLink2, StationLink201

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"
LINKS = sorted(set(SUBPROTOCOLS.values()), key=lambda cls: cls.__name__)


def protocol_methods() -> dict[str, object]:
    return {name: member for name, member in vars(ChargerLink).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def protocol_members() -> set[str]:
    return set(protocol_methods()) | set(ChargerLink.__annotations__)


@pytest.mark.parametrize("link_class", LINKS, ids=lambda cls: cls.__name__)
def test_every_version_link_does_all_a_charger_link_does(link_class):
    for name, declared in protocol_methods().items():
        implemented = getattr(link_class, name, None)
        assert implemented is not None, f"{link_class.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(implemented) == \
            inspect.iscoroutinefunction(declared), name
        assert list(inspect.signature(implemented).parameters) == \
            list(inspect.signature(declared).parameters), name
    link = link_class("CP", connection=None, listener=None, call_timeout_s=1.0)
    assert link.id == "CP"
    assert isinstance(link.registered, Wake)


def test_each_version_link_stands_on_the_framing_alone():
    """The 2.x links are no 1.6 link: they have none of the 1.6 calls or handlers; 2.0.1 and
    2.1 share what the 2.x family has in common, and neither is the other."""
    assert [cls.__name__ for cls in LINKS] == ["StationLink16", "StationLink201",
                                                "StationLink21"]
    for one in LINKS:
        for other in LINKS:
            assert one is other or not issubclass(one, other)
    assert StationLink16.__mro__[1] is OcppJLink
    for family in (StationLink201, StationLink21):
        assert family.__mro__[1:3] == (StationLink2, OcppJLink)
    for link_class in LINKS:
        link = link_class("CP", connection=None, listener=None, call_timeout_s=1.0)
        assert set(link.handlers()) <= link_class.DIALECT.actions
    for only_16 in ("change_configuration", "on_start_transaction", "on_stop_transaction"):
        assert not hasattr(StationLink2, only_16)
    assert {cls.DIALECT.format_violation for cls in LINKS} == {"FormationViolation",
                                                                "FormatViolation"}
    assert [cls.DIALECT.schemas for cls in LINKS] == ["v16", "v201", "v21"]
    der_only = {"NotifyDERAlarm", "NotifyDERStartStop", "ReportDERControl"}
    assert der_only <= set(StationLink21("CP", None, None, 1.0).handlers())
    assert not der_only & set(StationLink201("CP", None, None, 1.0).handlers())


@pytest.mark.parametrize("link_class", LINKS, ids=lambda cls: cls.__name__)
def test_links_of_a_class_share_one_handler_table_and_each_answers_for_itself(link_class):
    """A handler table per class, not a dict of bound methods per connection; a handler
    looked up is bound to the link it was looked up on."""
    one, other = (link_class(sid, connection=None, listener=None, call_timeout_s=1.0)
                  for sid in ("CP1", "CP2"))
    assert one._handlers._table is other._handlers._table
    assert set(one._handlers) == set(link_class.handlers())
    heartbeat = one._handlers.get("Heartbeat")
    assert heartbeat is not None and heartbeat.__self__ is one
    assert other._handlers.get("Heartbeat").__self__ is other
    assert one._handlers.get("NoSuchAction") is None


@pytest.mark.parametrize("link_class", LINKS, ids=lambda cls: cls.__name__)
async def test_what_a_version_cannot_do_is_answered_without_a_call(link_class):
    """1.6 has no voltage monitors nor DER control, 2.0.1 no DER control: the link says so
    itself (the connection here is none: any call would fail)."""
    link = link_class("CP", connection=None, listener=None, call_timeout_s=1.0)
    curve = der.DerCurve(((90.0, -100.0), (110.0, -100.0)))
    spec = vm.MonitorSpec(vm.VoltageVariable("ChargingStation"), "LowerThreshold", 216.2)
    if link_class is StationLink16:
        outcome = await link.set_voltage_monitors([spec])
        assert outcome.unsupported and outcome.refused == ((spec, "NotSupported"),)
        assert await link.clear_voltage_monitors([3]) == {3}
        assert await link.read_voltage_monitors([spec]) == []
    if link_class is StationLink21:
        return
    assert await link.read_der_support() is False
    assert (await link.set_der_control(curve)).status == "not-supported"
    assert (await link.read_der_control()).reply.status == "not-supported"
    assert (await link.read_der_control()).control is None
    assert (await link.clear_der_control()).status == "not-supported"


def _link_expression(node: ast.expr) -> bool:
    """``link``, ``previous_link``, ``state.link``: what names a station's link."""
    if isinstance(node, ast.Name):
        return node.id == "link" or node.id.endswith("_link")
    return isinstance(node, ast.Attribute) and node.attr == "link"


def test_the_bridge_asks_a_link_only_what_charger_link_declares():
    """Outside the protocol edge, a link is used through what ChargerLink declares, never
    probed with getattr/hasattr/isinstance for what a version can do."""
    declared = protocol_members()
    misuses = []
    for path in sorted(BRIDGE.rglob("*.py")):
        if path.parent.name in ("ocpp", "sim"):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            where = f"{path.relative_to(BRIDGE)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and _link_expression(node.value) \
                    and node.attr not in declared:
                misuses.append(f"{where}: .{node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr", "isinstance") and node.args \
                    and _link_expression(node.args[0]):
                misuses.append(f"{where}: {node.func.id}")
    assert misuses == []
