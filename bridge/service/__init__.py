"""The service shell: configuration, supervised sources, HTTP (webhooks, health, metrics), CLI, start-up and shutdown."""
