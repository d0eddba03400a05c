"""A Flet web app template using flet-resilient."""
