"""`make bench`: throughput of ww_assets against a bare copy and the replaced system's row path."""
