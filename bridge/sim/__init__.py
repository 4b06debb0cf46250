"""Simulated OCPP equipment for tests, the demo and benchmarks."""
