"""Thin Lambda handlers: validate the environment, parse the event, call the core."""
