"""What the test suites share: databases, API clients, builders of test data and of the
command side on real services. Fixtures live in the ``conftest.py`` files; the code they use,
and that tests use directly, lives here."""
