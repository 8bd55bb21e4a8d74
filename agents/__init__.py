"""Executor side of farm: the claim loop, attempts of jobs, and the runtimes that run steps."""
