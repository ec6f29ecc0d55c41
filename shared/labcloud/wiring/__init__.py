"""Kernel-side wiring of the cloud SDKs to the local cloud, done by `connect("local")` and nothing else."""
