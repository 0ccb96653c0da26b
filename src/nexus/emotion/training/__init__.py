"""Training for both model tiers; the server tier needs the optional ``train`` extra."""
