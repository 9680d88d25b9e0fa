"""Routing: which provider and model answer a request, and what happens when one fails."""
