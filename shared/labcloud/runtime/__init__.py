"""Running learners' code under the clouds' container contracts."""
