"""One suite per protocol, run over every implementation (the real one and the fake)."""
