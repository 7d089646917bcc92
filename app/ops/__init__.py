"""Operator views over the shared state (issue 8): the overview, per-task swarm detail and the extra
columns of the task list. Read-only, pipelined, and bounded per call."""
