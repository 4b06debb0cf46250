"""OpenADR 3 (3.0.1 and 3.1.0) VEN: REST/JSON with OAuth2, handing on the same typed DR
events as the 2.0b VEN in :mod:`ven.oadr20b.client`.

The VEN itself is :class:`ven.oadr3.ven.Ven3`; its settings (:mod:`ven.oadr3.settings`)
are read without loading it, as a bridge that talks OpenADR 2.0b reads its configuration.
"""
