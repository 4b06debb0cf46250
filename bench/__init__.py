"""Benchmark tooling: a cheap OCPP 1.6J load generator and a reference central system."""
