"""Live limits (issue 8 part 3): cluster-wide limits an operator changes without a restart."""
