"""API Gateway HTTP API function: DICOMweb QIDO-RS / WADO-RS and simple JSON answers."""
