"""Code shared by the ingest and query functions: settings, keys, DICOM attribute choices."""
