"""What crosses to the planning process: kept objects go once, and both sides agree on
what they hold whatever the messages hold."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.runtime.plan_wire import Receiver, Sender


@dataclass(frozen=True)
class Kept:
    name: str
    payload: tuple[int, ...] = tuple(range(200))  # large enough to tell a reference apart


@dataclass(frozen=True)
class Other:
    name: str


POOL = [Kept(f"k{i}") for i in range(8)]


def test_a_kept_object_goes_once_and_is_the_same_object_after():
    sender, receiver = Sender([Kept]), Receiver()
    first = sender.encode({"stations": POOL[:4], "n": 1})
    second = sender.encode({"stations": POOL[:4], "n": 2})
    assert len(second) < len(first) / 4
    one, two = receiver.decode(first), receiver.decode(second)
    assert one == {"stations": POOL[:4], "n": 1} and two == {"stations": POOL[:4], "n": 2}
    # the receiver's objects are the ones it was sent first, not copies made again
    assert all(a is b for a, b in zip(one["stations"], two["stations"], strict=True))


def test_an_object_left_out_is_forgotten_by_both_and_sent_in_full_again():
    sender, receiver = Sender([Kept]), Receiver()
    receiver.decode(sender.encode([POOL[0], POOL[1]]))
    by_reference = sender.encode([POOL[0], POOL[1]])
    receiver.decode(by_reference)
    receiver.decode(sender.encode([POOL[0]]))  # POOL[1] left out: both forget it
    again = sender.encode([POOL[0], POOL[1]])
    assert len(again) > 4 * len(by_reference)  # POOL[1] in full
    assert receiver.decode(again) == [POOL[0], POOL[1]]


def test_other_kinds_are_sent_in_full_every_time():
    sender, receiver = Sender([Kept]), Receiver()
    other = Other("x" * 500)
    assert len(sender.encode([other])) > 500 and len(sender.encode([other])) > 500
    assert receiver.decode(Sender([Kept]).encode([other, POOL[0]])) == [other, POOL[0]]


def test_a_receiver_that_missed_a_message_refuses_the_next():
    sender = Sender([Kept])
    sender.encode([POOL[0]])  # never decoded
    with pytest.raises(pickle.UnpicklingError, match="never sent"):
        Receiver().decode(sender.encode([POOL[0]]))


def test_after_forget_every_object_goes_in_full():
    sender = Sender([Kept])
    sender.encode([POOL[0]])
    sender.forget()
    assert Receiver().decode(sender.encode([POOL[0]])) == [POOL[0]]


def test_a_cut_message_is_refused():
    data = Sender([Kept]).encode([POOL[0]])
    with pytest.raises(ValueError, match="head says"):
        Receiver().decode(data[:-3])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, len(POOL) - 1), max_size=12), min_size=1,
                max_size=8))
def test_any_sequence_of_messages_decodes_to_what_was_sent(messages: list[list[int]]):
    sender, receiver = Sender([Kept]), Receiver()
    for picks in messages:
        message = {"kept": [POOL[i] for i in picks], "other": [Other(str(i)) for i in picks]}
        assert receiver.decode(sender.encode(message)) == message


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=10),
                min_size=1, max_size=10))
def test_objects_made_anew_and_dropped_are_never_mistaken_for_others(
        messages: list[list[tuple[int, bool]]]):
    # Objects the sender no longer holds are freed, and new ones may get their id(): a
    # decoded message must still hold the objects sent, never an old one of the same id.
    sender, receiver = Sender([Kept]), Receiver()
    made = iter(range(1_000_000))
    live: dict[int, Kept] = {}
    for picks in messages:
        for slot, renew in picks:
            if renew or slot not in live:
                live[slot] = Kept(f"{slot}-{next(made)}")
        message = [live[slot] for slot, _ in picks]
        assert receiver.decode(sender.encode(message)) == message
        live = {slot: live[slot] for slot, _ in picks}  # the rest is freed
        del message
