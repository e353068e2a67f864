"""Helpers shared by the test suites (the SendGrid sandbox as a subprocess, ...)."""
