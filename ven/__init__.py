"""The VENs: one sub-package per OpenADR version (:mod:`ven.oadr20b`, :mod:`ven.oadr3`),
each handing on the policy's :class:`~policies.events.DrEvent`; :mod:`ven.interface` and
:mod:`ven.shared` hold what both share."""
