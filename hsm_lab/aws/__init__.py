"""The AWS side as the lab reaches it: LocalStack's lifecycle, endpoint rules, clients, stack outputs."""
