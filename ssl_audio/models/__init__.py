"""The three families on one trunk, each a config + presets + a module returning an `Output`."""
