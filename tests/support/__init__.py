"""What several test suites share: building the command side's dependencies, test data."""
