"""OpenADR 2.0b VEN: speaks to the utility's VTN and hands on typed DR events."""

from ven.events import DrEvent, EventSignal, EventStatus, InvalidEvent, OptType, SignalInterval

__all__ = ["DrEvent", "EventSignal", "EventStatus", "InvalidEvent", "OptType", "SignalInterval"]
