"""Fixtures of the edge-case tests: the OpenXSwitch receiver fixture, shared with its own tests."""

from tests.openxswitch.conftest import make_receiver

__all__ = ["make_receiver"]
