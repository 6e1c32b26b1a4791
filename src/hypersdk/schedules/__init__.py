"""Schedules: cron math (pure), the schedule model and parsing, and the scheduler service."""
