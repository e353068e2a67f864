"""Local tooling, never deployed: the Functions host (`host/`), the SendGrid sandbox (`sandbox/`),
Azurite (`azurite`), the Key Vault stand-in (`keyvault`), the stack of them all (`stack`), child
processes (`process`) and `local.settings.json` as the host and the sandbox follow it
(`settings_file`). NCRONTAB schedules are pure and shared with the app: `exporter.core.ncrontab`.

Never imported by the deployed app (`.funcignore` leaves this folder out).
"""
