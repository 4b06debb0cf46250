"""OpenADR 3 (3.0.1 and 3.1.0) VEN: REST/JSON with OAuth2, handing on the same typed DR
events as the 2.0b VEN in :mod:`ven.oadr20b.client`."""

from ven.oadr3.settings import MissingSecret, Oadr3Keys, Ven3Settings
from ven.oadr3.ven import Ven3

__all__ = ["MissingSecret", "Oadr3Keys", "Ven3", "Ven3Settings"]
