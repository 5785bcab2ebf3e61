"""The teaming BentoML service: classify-or-defer, the human review queue and the reviewer page."""
