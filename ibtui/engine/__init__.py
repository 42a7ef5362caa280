"""Headless engine: data, model, training loop, schedules, run store. Never imports textual."""
