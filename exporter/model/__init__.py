"""What the app talks about: runs, destinations, messages, snapshot versions."""
