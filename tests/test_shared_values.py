"""Equal values handed out as one object, up to a bound (bridge.shared_values)."""

from bridge.shared_values import SharedValues


def test_equal_values_are_one_object_and_past_the_bound_their_own():
    shared: SharedValues[frozenset[str]] = SharedValues(limit=2)
    first = shared(frozenset({"voltage", "power.active.import"}))
    assert shared(frozenset({"power.active.import", "voltage"})) is first
    second = shared(frozenset({"soc"}))
    third = frozenset({"current.import"})
    assert shared(third) is third and len(shared) == 2
    again = frozenset({"current.import"})
    assert shared(again) is again and again == third  # equal, not kept: the bound holds
    assert shared(frozenset({"soc"})) is second
