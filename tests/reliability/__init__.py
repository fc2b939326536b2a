"""Reliability findings (adversarial run): each test reproduces one and pins its fix."""
