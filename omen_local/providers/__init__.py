"""Provider adapters: each speaks one upstream API and yields normalized events."""
