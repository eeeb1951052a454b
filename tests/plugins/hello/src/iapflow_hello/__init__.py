"""iapflow-hello: an example iapflow plugin (see its ``plugin`` module)."""
