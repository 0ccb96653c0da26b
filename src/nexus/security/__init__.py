"""Zero-trust security: the audit chain, signed webhooks, authorisation policies, abuse
limits and threat detection."""
