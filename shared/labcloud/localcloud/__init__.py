"""The local cloud: one loopback process that speaks the clouds' wire protocols and really executes."""
