"""Helpers shared by the test tiers: DICOM data, parts, in-process API calls, peers, processes."""
