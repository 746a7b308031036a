"""streamrec: a near-real-time recommender on Spark Structured Streaming, Kafka and Redis."""

__version__ = "0.1.0"
