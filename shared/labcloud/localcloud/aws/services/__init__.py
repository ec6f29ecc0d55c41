"""The AWS services the local cloud makes real, one module per service; moto answers everything else.

Every module here with a `register(gateway, context)` function is registered when the local cloud starts.
"""
