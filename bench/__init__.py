"""`make bench`: Plaza's throughput, latency, API and memory figures on real Kafka and PostgreSQL."""
