"""Self-evolving funnels (issue #8): genomes of page designs, evolutionary search on live
traffic with bandit allocation, adaptive flow and funnel self-monitoring."""
