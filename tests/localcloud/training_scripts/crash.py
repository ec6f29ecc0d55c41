"""A script that fails halfway, as learners' scripts do."""

print("loading data")
raise ValueError("the learning rate must be positive")
