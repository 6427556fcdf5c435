"""Ray: sweep specs, the trainable, the job driver, aggregation jobs, reports. Depends on the rest; nothing depends on it."""
