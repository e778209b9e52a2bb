"""S3-triggered ingest: index every series part written under ``incoming/``."""
