"""Prometheus collectors beyond the HTTP set of app/api/metrics.py: the rest of the legacy supernode's
metrics (METRICS-AND-HELM.md §5), the cluster-wide gauges of this port, and the Redis round-trip count."""
