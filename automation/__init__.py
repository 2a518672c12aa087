"""Sensors, schedules and maintenance jobs that keep the dedup graph up to date."""
