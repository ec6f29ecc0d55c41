"""Azure on the local cloud: Azure OpenAI served by our own gateway, Blob storage by Azurite (a child process)."""
