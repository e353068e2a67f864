"""Local tooling: the SendGrid sandbox and (later) the local Functions host and stack.

Never imported by the deployed app (`.funcignore` leaves this folder out).
"""
