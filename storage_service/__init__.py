"""Objects (datasets, models, results, logs) in per-user namespaces, on local disk or S3."""
