"""The operator's window on the bridge: dashboard, JSON API and Prometheus metrics."""
