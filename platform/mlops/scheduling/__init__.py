"""Scheduled sweeps: cron timetables, the schedules and their history in the platform
database, the scheduler loop, and one scheduled run."""
