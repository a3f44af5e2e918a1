"""Registry events sent to webhooks: signed, ordered, retried from the delivery table."""
