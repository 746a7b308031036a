"""Contracts shared by producers, both jobs and apps: the event schema, the Redis layout and the
typed config. Nothing here opens a connection."""
