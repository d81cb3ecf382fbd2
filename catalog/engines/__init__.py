"""Where pods run: one module per driver, the protocol in base.py."""
