"""Events on the wire: their envelope, the Kafka topics, publisher and consumer, and the
in-memory bus."""
