"""A run's steps: request, plan, send, follow, verify, finish."""
