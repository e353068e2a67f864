"""The pure core: read, map, validate, dedupe, batch, diff; no Azure, no network."""
