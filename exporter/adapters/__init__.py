"""The outside world: Azure Storage, Table storage, Key Vault, SendGrid."""
