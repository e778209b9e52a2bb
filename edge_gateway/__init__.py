"""On-prem DICOM edge gateway: C-STORE in, durable spool, series parts zipped and shipped to S3."""
