"""Provider packages, one each, registered as plugins (entry point group transfer_bridge.providers); they import the core, never each other."""
