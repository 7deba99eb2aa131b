"""The domain: orders, products, pricing rules. Imports only the standard library."""
