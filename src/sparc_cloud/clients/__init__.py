"""HTTP clients of the two clouds. They know nothing about SPARC phases."""
