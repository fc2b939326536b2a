"""What every Kafka client of the bridge shares: connection settings and options, the schema registry client, the registry wire format."""
