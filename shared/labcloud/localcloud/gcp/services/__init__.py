"""The Google Cloud services of the local cloud, one module per service.

Every module here with a `register(gateway, context)` function is registered when the local cloud starts.
"""
