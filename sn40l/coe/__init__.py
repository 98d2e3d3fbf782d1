"""Composition of Experts: expert registry, router, HBM expert cache, placement across nodes."""
