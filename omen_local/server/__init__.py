"""The HTTP edge: aiohttp app, security checks, routes and the SSE writer."""
