"""Source adapters and maintenance tools for rs4m."""
