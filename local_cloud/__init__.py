"""The local stand-in for the cloud: moto server, ingest dispatcher, HTTP API and edge gateway."""
