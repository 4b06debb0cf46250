"""Local-controller parts: what drbridge needs to sit between stations and an operator's CSMS.

Pure parts (message ids, profile composition) and the two small stores (the outage queue,
the authorization cache). The protocol edge wires them in; see the README's "Local
controller" section.
"""
