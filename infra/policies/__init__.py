"""Our own checkov policies for the Bicep templates (loaded by infra/check.py)."""
