"""The routers of the public and claims API, one module per resource family."""
