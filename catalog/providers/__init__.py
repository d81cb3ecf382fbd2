"""Where nodes come from: one module per driver, the protocol in base.py."""
