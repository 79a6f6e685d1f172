"""Plaza ingest: takes citizens' posts from bridges, webhooks and files and publishes them on the bus."""
