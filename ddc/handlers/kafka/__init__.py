"""Kafka across the diode: a consumer-group source on the ingress, an idempotent, de-duplicating sink on the egress."""
