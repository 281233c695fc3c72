"""Real database and object-store servers for the test suite (started by the tests)."""
