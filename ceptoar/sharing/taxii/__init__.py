"""The TAXII 2.1 server: medallion's views over the hub's store, with the hub's own
authentication, per-member grants and TLP clearance, and fixes for medallion's deviations."""
