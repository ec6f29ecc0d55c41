"""One module per Azure service; each has `register(gateway, context)` (see `localcloud.context`)."""
