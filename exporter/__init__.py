"""Keeps SendGrid Marketing Campaigns contact lists in step with customer segments."""

__version__ = "0.1.0"
