"""What the flow needs from the outside world, as Protocols (and their errors)."""
