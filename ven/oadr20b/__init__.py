"""OpenADR 2.0b VEN on openleadr: registration, polling, events, opts, reports, TLS and
XML signatures, handing on the policy's :class:`~policies.events.DrEvent`."""
