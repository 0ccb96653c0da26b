"""The privacy engine: consent, PII redaction, field encryption and data-subject requests."""
