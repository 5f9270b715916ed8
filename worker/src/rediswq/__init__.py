"""A finite Redis work queue with leases."""
