"""economy-sync."""
