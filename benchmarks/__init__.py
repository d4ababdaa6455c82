"""Benchmarks, checks and experiments of umgf: scripts run from the repository, not part of the installed package."""
