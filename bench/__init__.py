"""fastserve's benchmark harness (never part of the test run); see README.md."""
